//! `tcpstate ports`: local port headroom per destination, refreshed as
//! events arrive (issue 11).
use crate::{
    cli::{PortsArgs, Unsupported},
    model::{Connection, Model, OpenKind, TimeWaitFate},
    pipeline,
    sinks::refreshed::Refreshed,
    source::{port_settings::PortSettings, Item},
    tcp::TcpState,
    views::{
        ports::{CallFailures, DestinationKey, NamespaceSettings, PortRates, PortsReport},
        Progress, View,
    },
};
use std::{cell::RefCell, io, rc::Rc};

pub async fn run(args: &PortsArgs, verbose: bool) -> anyhow::Result<()> {
    args.filters
        .refuse("ports", &[Unsupported::State, Unsupported::Cgroup])
        .map_err(anyhow::Error::msg)?;
    // The CLOSE_WAIT threshold plays no part here.
    let mut pipeline = pipeline::open(
        &args.input,
        &args.live,
        &args.filters,
        verbose,
        30,
        crate::source::live::ContextTask::OwnerTransitionsOnly,
    )?;
    let settings = if pipeline.netns_ports.is_empty() {
        // A recording from before the namespaces' settings were kept.
        NamespaceSettings::only_fallback(PortSettings {
            range: pipeline.sysctls.local_port_range,
            reserved: Vec::new(),
            tw_reuse: pipeline.sysctls.tw_reuse,
        })
    } else {
        NamespaceSettings::new(&pipeline.netns_ports)
    };
    let rates = Rc::new(RefCell::new(PortRates::default()));
    let failures = Rc::new(RefCell::new(CallFailures::default()));
    let (shown_rates, shown_failures) = (Rc::clone(&rates), Rc::clone(&failures));
    let mut view = Tracked {
        rates,
        shown: CountingFailures::new(
            failures,
            Refreshed::new(
                move |p: &Progress| {
                    let mut rates = shown_rates.borrow_mut();
                    rates.forget_old_frees();
                    let stats = p.stats();
                    PortsReport::new(
                        p.model,
                        &settings,
                        &rates,
                        &shown_failures.borrow(),
                        (stats.lost, stats.lost_call_failures),
                    )
                },
                args.json,
                args.every,
            ),
        ),
    };
    pipeline::drive(&mut pipeline, &mut view, None).await
}

/// Feeds take and free events to the rates, then hands the item on (to the
/// failure counts and the report).
struct Tracked<V> {
    rates: Rc<RefCell<PortRates>>,
    shown: CountingFailures<V>,
}

impl<V> Tracked<V> {
    fn rates_ended(&self, ended: &[Connection], model: &Model) {
        let mut rates = self.rates.borrow_mut();
        for c in ended {
            if let Some((key, free_ns)) = freed(c, model) {
                rates.ended(key, free_ns);
            }
        }
    }
}

impl<V: View> View for Tracked<V> {
    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> io::Result<()> {
        {
            let mut rates = self.rates.borrow_mut();
            match item {
                Item::Transition(t) => rates.transition(t),
                // Read time, not event time: a replay would differ.
                Item::Lost { .. } => {}
                other => rates.seen(other.ts_boot_ns()),
            }
        }
        self.rates_ended(ended, model);
        self.shown.item(item, ended, model, shown)
    }

    fn settled(&mut self, ended: &[Connection], model: &Model, shown: bool) -> io::Result<()> {
        self.rates_ended(ended, model);
        self.shown.settled(ended, model, shown)
    }

    fn refresh(&mut self, progress: &Progress, last: bool) -> io::Result<()> {
        self.shown.refresh(progress, last)
    }

    fn shown(&self) -> u64 {
        self.shown.shown()
    }
}

/// When an ended outgoing connection gives its port back: at its end, or
/// when the TIME_WAIT it left is predicted to expire.
fn freed(c: &Connection, model: &Model) -> Option<(DestinationKey, u64)> {
    if c.open != OpenKind::Active || c.local.port == 0 || c.remote.port == 0 {
        return None;
    }
    let key = DestinationKey {
        netns: c.netns,
        local_ip: c.local.ip,
        remote: c.remote,
    };
    let at = match (c.time_wait, c.state) {
        (TimeWaitFate::Entered, _) | (_, TcpState::TimeWait) => {
            model.time_wait().get(&c.flow())?.expires_ns
        }
        _ => c.ended_ns()?,
    };
    Some((key, at))
}

/// Counts failed calls and handshakes for a view that shows them beside
/// its own report (`stat`).
pub struct CountingFailures<V> {
    failures: Rc<RefCell<CallFailures>>,
    shown: V,
}

impl<V> CountingFailures<V> {
    pub fn new(failures: Rc<RefCell<CallFailures>>, shown: V) -> Self {
        Self { failures, shown }
    }

    fn failures_ended(&self, ended: &[Connection]) {
        let mut failures = self.failures.borrow_mut();
        for c in ended {
            failures.ended(c);
        }
    }
}

impl<V: View> View for CountingFailures<V> {
    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> io::Result<()> {
        if let Item::CallFailed(f) = item {
            self.failures.borrow_mut().call(f);
        }
        self.failures_ended(ended);
        self.shown.item(item, ended, model, shown)
    }

    fn settled(&mut self, ended: &[Connection], model: &Model, shown: bool) -> io::Result<()> {
        self.failures_ended(ended);
        self.shown.settled(ended, model, shown)
    }

    fn refresh(&mut self, progress: &Progress, last: bool) -> io::Result<()> {
        self.shown.refresh(progress, last)
    }

    fn shown(&self) -> u64 {
        self.shown.shown()
    }
}
