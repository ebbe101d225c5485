//! `tcpstate leaks`: CLOSE_WAIT suspects per process, refreshed as events
//! arrive (and as sockets cross the age threshold).
use crate::{
    cli::{LeaksArgs, Unsupported},
    source::procfs,
    views::leaks::LeaksView,
};
use crate::{pipeline, sinks::refreshed::Refreshed, views::Progress};

pub async fn run(args: &LeaksArgs, verbose: bool) -> anyhow::Result<()> {
    if args.kill {
        return kill_suspects(args);
    }
    if args.act.yes
        || args.act.dry_run
        || !args.owner.pids.is_empty()
        || !args.owner.comms.is_empty()
    {
        anyhow::bail!("--yes, --dry-run, --pid and --comm go with `tcpstate leaks --kill`");
    }
    args.filters
        .refuse("leaks", &[Unsupported::State, Unsupported::Cgroup])
        .map_err(anyhow::Error::msg)?;
    let mut pipeline = pipeline::open(
        &args.input,
        &args.live,
        &args.filters,
        verbose,
        args.leak.threshold_secs,
        crate::source::live::ContextTask::OwnerTransitionsOnly,
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

/// `leaks --kill`: the suspects as `kill` sees them (CLOSE_WAIT, peer
/// silent for at least the threshold), handed to the kill path.
fn kill_suspects(args: &LeaksArgs) -> anyhow::Result<()> {
    if !args.input.input.is_empty() {
        anyhow::bail!("`tcpstate leaks --kill` acts on the live kernel; it does not take --input");
    }
    args.filters
        .refuse("leaks --kill", &[Unsupported::State])
        .map_err(anyhow::Error::msg)?;
    let mut filter = args.filters.to_filter();
    filter.states = vec![crate::tcp::TcpState::CloseWait];
    let criteria = crate::views::kill::Criteria {
        filter,
        pids: args.owner.pids.clone(),
        comms: args.owner.comms.clone(),
        older_than_ms: Some(args.leak.threshold_secs.saturating_mul(1000)),
    };
    super::kill::execute(&criteria, &args.act)
}
