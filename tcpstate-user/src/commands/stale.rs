//! `tcpstate stale`: one look at the ESTABLISHED connections, judged by the
//! kernel's `tcp_info` (see `views::stale`).
use crate::{
    cli::{StaleArgs, Unsupported},
    tcp::TcpState,
    views::{kill::Criteria, stale::StaleReport},
};

pub fn run(args: &StaleArgs) -> anyhow::Result<()> {
    args.filters
        .refuse("stale", &[Unsupported::State])
        .map_err(anyhow::Error::msg)?;
    let mut filter = args.filters.to_filter();
    let sockets = super::kill::look(&filter, &args.owner)?;
    filter.states = vec![TcpState::Established];
    let criteria = Criteria {
        filter,
        pids: args.owner.pids.clone(),
        comms: args.owner.comms.clone(),
        older_than_ms: None,
    };
    let chosen = criteria.matching(&sockets);
    let report = StaleReport::new(&chosen, args.silent_for.as_millis() as u64);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}
