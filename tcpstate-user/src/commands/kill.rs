//! `tcpstate kill` (and `leaks --kill`): look at the sockets once, show the
//! selection, then destroy it through the kernel if told to.
use crate::{
    cli::{KillActArgs, KillArgs, OwnerArgs},
    filter::Filter,
    kill_log::{self, KillRecord},
    source::snapshot::{
        destroy::DestroyOutcome,
        inspect::{self, Inspected},
    },
    status,
    views::kill::{self as view, Criteria},
};
use anyhow::{bail, Context};
use std::io::{BufRead, IsTerminal, Write};

pub fn run(args: &KillArgs) -> anyhow::Result<()> {
    let criteria = Criteria {
        filter: args.filters.to_filter(),
        pids: args.owner.pids.clone(),
        comms: args.owner.comms.clone(),
        older_than_ms: args.older_than.map(|d| d.as_millis() as u64),
    };
    execute(&criteria, &args.act)
}

/// The namespaces to look in: those named, else those of the processes
/// named, else the caller's. An unknown pid is refused.
pub fn namespaces(filter: &Filter, owner: &OwnerArgs) -> anyhow::Result<Vec<u32>> {
    let mut of_pids = Vec::new();
    for &pid in &owner.pids {
        let Some(ns) = inspect::netns_of_process(pid) else {
            bail!("no process with pid {pid} (`ps -p {pid}` to check); nothing was done");
        };
        if !of_pids.contains(&ns) {
            of_pids.push(ns);
        }
    }
    Ok(if !filter.netns.is_empty() {
        filter.netns.clone()
    } else if !of_pids.is_empty() {
        of_pids
    } else {
        vec![crate::source::snapshot::try_current_netns()
            .context("reading this process's network namespace (/proc/self/ns/net)")?]
    })
}

/// Looks at the sockets of the namespaces the criteria name.
pub fn look(filter: &Filter, owner: &OwnerArgs) -> anyhow::Result<Vec<Inspected>> {
    let namespaces = namespaces(filter, owner)?;
    let found = inspect::inspect(&namespaces).context("listing TCP sockets")?;
    if found.scan.permission_denied > 0 {
        log::warn!(
            "the descriptors of {} process(es) could not be read, so their sockets show no owner; run as root to see every owner",
            found.scan.permission_denied
        );
    }
    if found.dump.interrupted {
        log::warn!("the kernel's socket list changed during the dump: a socket may be missing");
    }
    Ok(found.sockets)
}

fn may_destroy() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_NET_ADMIN,
    )
    .unwrap_or(false)
}

/// Asks on the terminal; true for yes.
fn confirmed(count: usize) -> anyhow::Result<bool> {
    let mut err = std::io::stderr();
    write!(err, "tcpstate: kill these {count} socket(s)? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Tells running recorders what was done (issue 12), before anything else
/// can end the run: every answer the kernel gave is recorded.
fn record_kills(chosen: &[Inspected], outcomes: &[DestroyOutcome]) {
    let answered = crate::clock::boot_now_ns();
    let kills: Vec<_> = chosen
        .iter()
        .zip(outcomes)
        .map(|(socket, outcome)| KillRecord::new(socket, *outcome, answered))
        .collect();
    let recorders = kill_log::notify::send_all(&kills);
    if recorders > 0 {
        log::info!(
            "{} kill(s) sent to {recorders} running recorder(s)",
            kills.len()
        );
    }
}

pub fn execute(criteria: &Criteria, act: &KillActArgs) -> anyhow::Result<()> {
    criteria.check()?;
    let owner = OwnerArgs {
        pids: criteria.pids.clone(),
        comms: criteria.comms.clone(),
    };
    // Checked before looking: refused up front rather than per socket.
    if !act.dry_run && !may_destroy() {
        bail!("destroying sockets needs CAP_NET_ADMIN: run `tcpstate kill` as root (--dry-run only shows the selection); nothing was killed");
    }
    let sockets = look(&criteria.filter, &owner)?;
    let chosen = criteria.matching(&sockets);
    print!("{}", view::render_plan(&chosen));
    std::io::stdout().flush()?;
    criteria.within_max(chosen.len(), act.max)?;
    if chosen.is_empty() {
        status!("nothing selected; nothing was killed");
        return Ok(());
    }
    if act.dry_run {
        status!("dry run: nothing was killed");
        return Ok(());
    }
    if !act.yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to kill without --yes: standard input is not a terminal to confirm on; nothing was killed");
        }
        if !confirmed(chosen.len())? {
            bail!("not confirmed; nothing was killed");
        }
    }
    let outcomes = inspect::destroy_all(&chosen).context("destroying sockets")?;
    record_kills(&chosen, &outcomes);
    if outcomes.contains(&DestroyOutcome::Unsupported) {
        bail!("{}", view::UNSUPPORTED);
    }
    for (socket, outcome) in chosen.iter().zip(&outcomes) {
        status!("{}", view::log_line(socket, *outcome));
        println!(
            "{:<14} {:<22} {:<12} {} -> {}",
            view::outcome_text(*outcome),
            view::owner_text(socket),
            socket.state.name(),
            socket.sock.local,
            socket.sock.remote
        );
    }
    let summary = view::summary(&outcomes);
    if outcomes
        .iter()
        .any(|o| matches!(o, DestroyOutcome::Refused(_)))
    {
        bail!("the kernel refused some: {summary}");
    }
    status!("{summary}");
    Ok(())
}
