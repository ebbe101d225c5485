//! `tcpstate leaks`: CLOSE_WAIT suspects per process, refreshed as events
//! arrive (and as sockets cross the age threshold).
use super::{pipeline, refreshed::Refreshed};
use crate::{
    cli::{LeaksArgs, Unsupported},
    views::leaks::LeaksView,
};

/// The command line of a live process, for telling apart workers of one
/// program.
pub fn cmdline(tgid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{tgid}/cmdline")).ok()?;
    let text: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    (!text.is_empty()).then(|| text.join(" "))
}

pub async fn run(args: &LeaksArgs, verbose: bool) -> anyhow::Result<()> {
    args.filters
        .refuse("leaks", &[Unsupported::State, Unsupported::Cgroup])
        .map_err(anyhow::Error::msg)?;
    let mut pipeline = pipeline::open(
        &args.input,
        &args.live,
        &args.filters,
        verbose,
        args.threshold_secs,
    )?;
    let live = pipeline.is_live();
    let mut names = crate::source::cgroup::CgroupNames::default();
    let mut view = Refreshed::new(
        move |p: &pipeline::Pipeline| {
            // A recording's processes are gone, or are others by now.
            let lookup = |tgid| if live { cmdline(tgid) } else { None };
            LeaksView::new(&p.model.leaks(p.now_ns()), p.stats().lost, lookup, |id| {
                names.view(id, live)
            })
        },
        args.json,
        args.every,
    );
    pipeline::drive(&mut pipeline, &mut view, None).await
}
