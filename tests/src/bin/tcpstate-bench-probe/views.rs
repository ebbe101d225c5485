//! Userspace cost of `stat` and `serve` as they run live, measured on a
//! replay: a replay of `stat` builds its report once, at the end, and
//! never keeps the running TIME_WAIT tally a live report starts; here the
//! recording goes through the same pipeline and views, and the report is
//! rebuilt every second of event time, as live `stat` (`--every 1s`) or a
//! `serve` scraped every second does. Deterministic (no clock, no /proc),
//! so that it can run under `valgrind --tool=callgrind` and its reports
//! can be compared before and after a change (`digest`).
use std::{
    hash::{Hash, Hasher},
    path::Path,
    time::{Duration, Instant},
};
use tcpstate::{
    cli::{FilterArgs, InputArgs},
    commands::ports::CountingFailures,
    pipeline::Pipeline,
    sinks::refreshed::Refreshed,
    views::{
        metrics::{self, Counters, Inputs, Limits},
        stat::StatView,
        Progress, View,
    },
};

const SECOND_NS: u64 = 1_000_000_000;

/// `which`: `stat` (its table on stdout, as live) or `serve` (the
/// exposition, hashed).
pub fn run(which: &str, path: &Path) -> Result<serde_json::Value, String> {
    let input = InputArgs {
        input: vec![path.to_path_buf()],
        ..InputArgs::default()
    };
    let mut pipeline =
        Pipeline::replay(&input, &FilterArgs::default(), 30).map_err(|e| format!("{e:#}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let mut view: Box<dyn View> = match which {
        "stat" => Box::new(stat_view()),
        "serve" => Box::new(Scraped::default()),
        _ => return Err(format!("no view {which} (stat, serve)")),
    };
    let start = Instant::now();
    let mut next_refresh = 0;
    let mut refreshes = 0u64;
    while !pipeline.finished() {
        runtime
            .block_on(
                pipeline.step(|item, ended, model, shown| view.item(item, ended, model, shown)),
            )
            .map_err(|e| format!("{e:#}"))?;
        let now = pipeline.now_ns();
        if now >= next_refresh {
            next_refresh = now + SECOND_NS;
            refreshes += 1;
            view.refresh(&live_progress(&pipeline), false)
                .map_err(|e| e.to_string())?;
        }
    }
    view.refresh(&live_progress(&pipeline), true)
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "view": which,
        "transitions": pipeline.stats().delivered,
        "refreshes": refreshes + 1,
        "seconds": start.elapsed().as_secs_f64(),
        "shown": view.shown(),
    }))
}

/// What a live view is shown at a refresh.
fn live_progress(p: &Pipeline) -> Progress<'_> {
    Progress::new(&p.model, p.clock, &p.sysctls, p.now_ns(), p.stats(), true)
}

/// `stat`'s view as `commands::stat` builds it (cgroups unresolved),
/// refreshed whenever asked.
fn stat_view() -> impl View {
    let failures = std::rc::Rc::new(std::cell::RefCell::new(Default::default()));
    let counted = std::rc::Rc::clone(&failures);
    CountingFailures::new(
        failures,
        Refreshed::new(
            move |p: &Progress| {
                let mut view =
                    StatView::new(p.model, p.sysctls.local_port_range, p.stats().lost, |_| {
                        Default::default()
                    });
                view.call_failures = counted.borrow().rows();
                view
            },
            false,
            Duration::ZERO,
        ),
    )
}

/// `serve`'s view: counters per item, the exposition at each refresh (as
/// if scraped), without the process figures (they read /proc).
#[derive(Default)]
struct Scraped {
    counters: Counters,
    digest: std::collections::hash_map::DefaultHasher,
    scrapes: u64,
}

impl View for Scraped {
    fn item(
        &mut self,
        item: &tcpstate::source::Item,
        ended: &[tcpstate::model::Connection],
        _: &tcpstate::model::Model,
        _: bool,
    ) -> std::io::Result<()> {
        self.counters.count(item, ended);
        Ok(())
    }

    fn settled(
        &mut self,
        ended: &[tcpstate::model::Connection],
        _: &tcpstate::model::Model,
        _: bool,
    ) -> std::io::Result<()> {
        self.counters.count_ended(ended);
        Ok(())
    }

    fn refresh(&mut self, progress: &Progress, last: bool) -> std::io::Result<()> {
        let text = metrics::render(&Inputs {
            model: progress.model,
            counters: &self.counters,
            source: progress.stats(),
            now_ns: progress.now_ns(),
            limits: Limits::default(),
            process: Default::default(),
            pod_of: &|_| None,
        });
        text.hash(&mut self.digest);
        self.scrapes += 1;
        if last {
            // The last exposition, and a digest of them all, to compare.
            println!("{text}");
            println!("# digest {:016x}", self.digest.clone().finish());
        }
        Ok(())
    }

    fn shown(&self) -> u64 {
        self.scrapes
    }
}
