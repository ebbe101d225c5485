//! The live pipeline shared by the lifetime commands (`life`, `stat`,
//! `leaks`): live source → connection model.
use crate::{
    cli::{FilterArgs, LiveArgs},
    clock::boot_now_ns,
    model::{Connection, Input, Model, ModelConfig, ObservedHow, OwnerObservation, ResetSeen},
    source::{
        live::{LiveSource, OwnerTracking},
        sysctl::TcpSysctls,
        Item,
    },
};

pub struct LiveModel {
    pub source: LiveSource,
    pub model: Model,
    pub sysctls: TcpSysctls,
    items: Vec<Item>,
    inputs: Vec<Input>,
}

/// The model's settings from the host's sysctls.
pub fn model_config(sysctls: &TcpSysctls, close_wait_leak_secs: u64) -> ModelConfig {
    ModelConfig {
        fin_timeout_secs: sysctls.fin_timeout_secs,
        max_tw_buckets: sysctls.max_tw_buckets,
        rfc1337: sysctls.rfc1337,
        close_wait_leak_secs,
        ..ModelConfig::default()
    }
}

impl LiveModel {
    pub fn open(
        live: &LiveArgs,
        filters: &FilterArgs,
        verbose: bool,
        close_wait_leak_secs: u64,
    ) -> anyhow::Result<LiveModel> {
        let mut options = super::live_options(live, filters, verbose);
        options.lifetime_hooks = true;
        let source = LiveSource::open(&options)?;
        if let OwnerTracking::Unavailable(reason) = source.owner_tracking() {
            eprintln!(
                "tcpstate: warning: owners of accepted sockets are unavailable ({reason}); they show as unknown"
            );
        }
        let sysctls = TcpSysctls::read();
        let mut model = Model::new(model_config(&sysctls, close_wait_leak_secs));
        // Taken once, after the program is attached, so that no socket falls
        // between the two: what changes meanwhile is in the ring buffer.
        load_snapshot(&mut model);
        Ok(LiveModel {
            source,
            model,
            sysctls,
            items: Vec::new(),
            inputs: Vec::new(),
        })
    }

    /// Waits for the next batch, applies it, expires TIME_WAIT entries whose
    /// time has come, and returns the connections that ended.
    pub async fn step(&mut self) -> anyhow::Result<Vec<Connection>> {
        self.source.next_batch(&mut self.items).await?;
        Ok(self.apply())
    }

    /// Drains what is left (at exit).
    pub fn finish(&mut self) -> Vec<Connection> {
        self.source.finish(&mut self.items);
        self.apply()
    }

    fn apply(&mut self) -> Vec<Connection> {
        self.inputs.clear();
        self.inputs.extend(self.items.drain(..).map(to_input));
        let ended = self.model.apply_batch(&self.inputs);
        self.model.expire(boot_now_ns());
        ended
    }
}

/// Sockets that exist before tracing, so leaks and TIME_WAIT sockets older
/// than the tracer are known. A failed snapshot is reported, not fatal.
fn load_snapshot(model: &mut Model) {
    let now = boot_now_ns();
    match crate::source::snapshot::take(crate::source::snapshot::current_netns()) {
        Ok(snapshot) => {
            let mut refused = 0;
            for socket in &snapshot.sockets {
                let left = socket
                    .time_wait_expires_in_ms
                    .map(|ms| u64::from(ms) * 1_000_000);
                if model
                    .insert_existing_expiring(socket.existing, now, left)
                    .is_err()
                {
                    refused += 1;
                }
            }
            log::info!(
                "start-up snapshot: {} sockets ({refused} not tracked), {:?}",
                snapshot.sockets.len(),
                snapshot.errors
            );
        }
        Err(e) => {
            eprintln!("tcpstate: warning: sockets that existed before the start are unknown: {e}")
        }
    }
}

pub fn to_input(item: Item) -> Input {
    match item {
        Item::Transition(t) => Input::Transition(t),
        Item::Accepted(seen) => Input::Owner(OwnerObservation {
            ts_boot_ns: seen.ts_boot_ns,
            skaddr: seen.skaddr,
            tgid: seen.task.tgid,
            pid: seen.task.pid,
            comm: seen.task.comm,
            how: ObservedHow::Accept,
        }),
        Item::Lost { total } => Input::Lost { total },
        Item::ResetSent(reset) => Input::Reset(ResetSeen {
            ts_boot_ns: reset.ts_boot_ns,
            netns: reset.netns,
            segment_src: reset.segment_src,
            segment_dst: reset.segment_dst,
            sender_state: reset.sender_state,
        }),
    }
}

/// Runs the pipeline until Ctrl-C/SIGTERM or until the output is closed,
/// handing each step's ended connections to `on_step`; then drains and
/// prints the summary. `on_step` is called with `final_step` true once last.
pub async fn run_until_signal(
    pipeline: &mut LiveModel,
    mut on_step: impl FnMut(&mut LiveModel, Vec<Connection>, bool) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    eprintln!("tcpstate: tracing TCP connections (Ctrl-C to stop)");
    let mut lost_seen = 0;
    let mut closed = false;
    loop {
        let ended = tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            ended = pipeline.step() => ended?,
        };
        warn_lost(pipeline, &mut lost_seen);
        if let Err(e) = on_step(pipeline, ended, false) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                closed = true;
                break;
            }
            return Err(e).context("writing the output");
        }
    }
    let ended = pipeline.finish();
    if !closed {
        match on_step(pipeline, ended, true) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing the output")
            }
            _ => {}
        }
    }
    let stats = pipeline.source.stats();
    let model = pipeline.model.stats();
    eprintln!(
        "tcpstate: {} transitions seen, {} lost in the kernel; {} accept() owners seen, {} lost; {} connections evicted from a full table",
        stats.delivered, stats.lost, stats.owners, stats.lost_owners, model.evicted
    );
    Ok(())
}

fn warn_lost(pipeline: &LiveModel, seen: &mut u64) {
    let lost = pipeline.source.stats().lost;
    if lost > *seen {
        *seen = lost;
        eprintln!(
            "tcpstate: warning: {lost} transitions lost in the kernel so far; affected connections are marked uncertain (raise --ring-size)"
        );
    }
}
