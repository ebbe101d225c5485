//! `tcpstate leaks`: CLOSE_WAIT suspects per process, refreshed as events
//! arrive (and as sockets cross the age threshold).
use crate::{
    cli::{LeaksArgs, Unsupported},
    source::procfs,
    views::leaks::LeaksView,
};
use crate::{pipeline, sinks::refreshed::Refreshed, views::Progress};

pub async fn run(args: &LeaksArgs, verbose: bool) -> anyhow::Result<()> {
    args.filters
        .refuse("leaks", &[Unsupported::State, Unsupported::Cgroup])
        .map_err(anyhow::Error::msg)?;
    let mut pipeline = pipeline::open(
        &args.input,
        &args.live,
        &args.filters,
        verbose,
        args.leak.threshold_secs,
    )?;
    let live = pipeline.is_live();
    let mut names = crate::source::cgroup::CgroupNames::default();
    let mut view = Refreshed::new(
        move |p: &Progress| {
            // A recording's processes are gone, or are others by now.
            let lookup = |tgid| if live { procfs::cmdline(tgid) } else { None };
            LeaksView::new(&p.model.leaks(p.now_ns()), p.stats().lost, lookup, |id| {
                names.view(id, live)
            })
        },
        args.json,
        args.every,
    );
    pipeline::drive(&mut pipeline, &mut view, None).await
}
