//! `tcpstate stat`: sockets per state now, the live replacement of
//! `netstat -n | awk '/^tcp/ {++S[$NF]} ...'`; refreshed on events.
use crate::{
    cli::{StatArgs, Unsupported},
    views::stat::StatView,
};
use crate::{pipeline, sinks::refreshed::Refreshed, views::Progress};

pub async fn run(args: &StatArgs, verbose: bool) -> anyhow::Result<()> {
    args.filters
        .refuse("stat", &[Unsupported::State, Unsupported::Cgroup])
        .map_err(anyhow::Error::msg)?;
    let mut input = args.input.clone();
    if args.at.is_some() {
        input.to = args.at.clone();
    }
    let mut pipeline = pipeline::open(
        &input,
        &args.live,
        &args.filters,
        verbose,
        30,
        crate::source::live::ContextTask::OwnerTransitionsOnly,
    )?;
    let mut names = crate::source::cgroup::CgroupNames::default();
    let live = pipeline.is_live();
    let failures = std::rc::Rc::new(std::cell::RefCell::new(Default::default()));
    let counted = std::rc::Rc::clone(&failures);
    let mut view = super::ports::CountingFailures::new(
        failures,
        Refreshed::new(
            move |p: &Progress| {
                let mut view =
                    StatView::new(p.model, p.sysctls.local_port_range, p.stats().lost, |id| {
                        names.view(id, live)
                    });
                view.call_failures = counted.borrow().rows();
                view
            },
            args.json,
            args.every,
        ),
    );
    pipeline::drive(&mut pipeline, &mut view, None).await
}
