//! Who produces the TIME_WAIT, towards which destinations, and whether the
//! local port range runs out at the current rate.
//!
//! connect() needs a 4-tuple no other socket (TIME_WAIT included) has: to
//! one destination IP:port, from one local address, there are as many as
//! the ephemeral range has ports. An entry lasts 60 s, so at `rate` new
//! entries a second the steady state is `rate * 60` ports held. With
//! tcp_tw_reuse applying (and timestamps on), connect() may take the port of
//! an entry older than the reuse delay (1 s), so `rate * delay` are held.
use super::evidence;
use crate::views::doctor::{
    duration_text, facts::TimeWaitDestination, facts::TimeWaitOwner, value_text, DoctorInput,
    Finding, Severity, TIME_WAIT_SECS,
};
use serde::Serialize;

/// The local port range towards one destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortPressure {
    pub remote: String,
    pub loopback: bool,
    /// TIME_WAIT entries holding a port of the range now.
    pub time_wait_in_range: usize,
    /// Open connections to it holding a port of the range now.
    pub live_in_range: usize,
    pub range_size: u32,
    /// `time_wait_in_range` over the range.
    pub time_wait_share: f64,
    /// Entries with a port of the range created per second, on average
    /// over the watch.
    pub created_per_s: f64,
    /// Ports held in TIME_WAIT once this rate has lasted 60 s.
    pub steady_state: f64,
    /// tcp_tw_reuse lets connect() reuse its TIME_WAIT ports.
    pub tw_reuse_applies: bool,
    /// No free port is left now.
    pub exhausted_now: bool,
    /// At this rate the range runs out.
    pub exhausted_at_this_rate: bool,
    /// When (earliest, latest), in seconds from the end of the watch: the
    /// earliest if no entry held now expired first, the latest if all did.
    pub seconds_to_exhaustion: Option<(f64, f64)>,
}

/// The port arithmetic for one destination.
pub fn pressure(
    d: &TimeWaitDestination,
    range_size: u32,
    watch_secs: f64,
    tw_reuse_applies: bool,
    reuse_delay_secs: f64,
) -> PortPressure {
    let range = f64::from(range_size);
    let rate = if watch_secs > 0.0 {
        d.created_in_range as f64 / watch_secs
    } else {
        0.0
    };
    let live = d.live_in_range as f64;
    // With reuse, only entries younger than the delay block a port.
    let (lifetime, held_tw) = if tw_reuse_applies {
        (
            reuse_delay_secs,
            (d.in_range as f64).min(rate * reuse_delay_secs),
        )
    } else {
        (TIME_WAIT_SECS, d.in_range as f64)
    };
    let held = live + held_tw;
    let exhausted_now = held >= range;
    let exhausted_at_this_rate = rate > 0.0 && rate * lifetime + live > range;
    let seconds_to_exhaustion = if exhausted_now {
        Some((0.0, 0.0))
    } else if exhausted_at_this_rate {
        Some(((range - held) / rate, (range - live) / rate))
    } else {
        None
    };
    PortPressure {
        remote: d.remote.clone(),
        loopback: d.loopback,
        time_wait_in_range: d.in_range,
        live_in_range: d.live_in_range,
        range_size,
        time_wait_share: d.in_range as f64 / range,
        created_per_s: rate,
        steady_state: rate * TIME_WAIT_SECS,
        tw_reuse_applies,
        exhausted_now,
        exhausted_at_this_rate,
        seconds_to_exhaustion,
    }
}

impl PortPressure {
    pub fn severity(&self) -> Severity {
        let range = f64::from(self.range_size);
        let used = (self.time_wait_in_range + self.live_in_range) as f64;
        if self.exhausted_now || self.exhausted_at_this_rate {
            Severity::Critical
        } else if used >= range / 2.0
            || self.steady_state + self.live_in_range as f64 >= range / 2.0
        {
            // Without tcp_tw_reuse this would be (close to) exhausted.
            Severity::Warning
        } else {
            Severity::Info
        }
    }

    fn sentence(&self) -> String {
        let mut text = format!(
            "to {}: {} ephemeral ports in TIME_WAIT ({:.1}% of the {}-port range), {} held by open connections; {:.1} new a second during the watch, so {:.0} held once the rate has lasted 60 s",
            self.remote,
            self.time_wait_in_range,
            self.time_wait_share * 100.0,
            self.range_size,
            self.live_in_range,
            self.created_per_s,
            self.steady_state,
        );
        match self.seconds_to_exhaustion {
            Some((_, _)) if self.exhausted_now => {
                text.push_str(": no port is left now (connect() fails with EADDRNOTAVAIL)")
            }
            Some((early, late)) => text.push_str(&format!(
                ": the range runs out in {}–{} at this rate",
                duration_text(early),
                duration_text(late)
            )),
            None if self.tw_reuse_applies && self.steady_state > f64::from(self.range_size) => {
                text.push_str(": more than the range, but tcp_tw_reuse lets connect() reuse them")
            }
            None => text.push_str(": enough ports at this rate"),
        }
        text
    }
}

#[derive(Serialize)]
struct Evidence<'a> {
    time_wait_now: usize,
    created_during_watch: u64,
    created_per_s: f64,
    watch_s: f64,
    closed_first_local: usize,
    closed_first_both: usize,
    port_range: (u16, u16),
    range_size: u32,
    tw_reuse: Option<u32>,
    timestamps: Option<u32>,
    /// TcpExt.TWRecycled over the watch: ports tcp_tw_reuse took.
    tw_recycled: Option<i64>,
    by_owner: &'a [TimeWaitOwner],
    by_destination: Vec<PortPressure>,
}

const LISTED: usize = 10;

/// Whether tcp_tw_reuse lets connect() to this destination take TIME_WAIT
/// ports: 1 everywhere, 2 on loopback, and only with timestamps.
pub fn tw_reuse_applies(input: &DoctorInput, loopback: bool) -> bool {
    let s = &input.sysctls;
    let timestamps = s.timestamps.is_none_or(|t| t != 0);
    timestamps && matches!((s.tw_reuse, loopback), (Some(1), _) | (Some(2), true))
}

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let tw = &input.facts.time_wait;
    if tw.now == 0 && tw.created == 0 {
        return None;
    }
    let s = &input.sysctls;
    let range_size = s.port_range_size();
    let pressures: Vec<PortPressure> = tw
        .by_destination
        .iter()
        // One port towards a destination is no pressure (and a server's
        // TIME_WAIT gives one per client port).
        .filter(|d| d.in_range > 1 || d.created_in_range > 1)
        .map(|d| {
            pressure(
                d,
                range_size,
                input.watch_secs,
                tw_reuse_applies(input, d.loopback),
                s.tw_reuse_delay_secs(),
            )
        })
        .take(LISTED)
        .collect();
    let rate = if input.watch_secs > 0.0 {
        tw.created as f64 / input.watch_secs
    } else {
        0.0
    };
    // The table the kernel keeps per namespace is bounded: past it, closes
    // skip TIME_WAIT.
    let over_buckets = s
        .max_tw_buckets
        .filter(|&max| rate * TIME_WAIT_SECS > max as f64);
    let ports = pressures
        .iter()
        .map(PortPressure::severity)
        .max()
        .unwrap_or(Severity::Info);
    let severity = if over_buckets.is_some() {
        ports.max(Severity::Warning)
    } else {
        ports
    };
    // Sockets already in TIME_WAIT at the start have no known owner (a
    // time-wait socket belongs to no process): name a known one.
    let top = tw
        .by_owner
        .iter()
        .find(|o| o.process.tgid.is_some())
        .map(|o| o.process.text());
    let title = match pressures
        .iter()
        .find(|p| p.severity() == Severity::Critical)
    {
        Some(p) if p.exhausted_now => {
            format!("TIME_WAIT has used up the local ports towards {}", p.remote)
        }
        Some(p) => {
            let (early, late) = p.seconds_to_exhaustion.unwrap_or_default();
            format!(
                "TIME_WAIT runs out of local ports towards {} in {}–{} at this rate ({:.1} connections a second)",
                p.remote,
                duration_text(early),
                duration_text(late),
                p.created_per_s
            )
        }
        None => format!(
            "TIME_WAIT: {} sockets now, {} created during the watch ({rate:.1}/s){}",
            tw.now,
            tw.created,
            top.as_ref()
                .map(|t| format!(", most caused by {t}"))
                .unwrap_or_default()
        ),
    };

    let mut details = vec![format!(
        "{} TIME_WAIT sockets now (we closed first: {}, simultaneous close: {}); {} created during the {:.1} s watch ({rate:.1}/s); each lasts 60 s, so this rate holds {:.0} once it has lasted that long",
        tw.now,
        tw.closed_first_local,
        tw.closed_first_both,
        tw.created,
        input.watch_secs,
        rate * TIME_WAIT_SECS
    )];
    for o in tw.by_owner.iter().take(5) {
        let mut line = format!(
            "{}: {} now, {} created during the watch",
            o.process.text(),
            o.now,
            o.created
        );
        if o.created_passive > 0 {
            line.push_str(&format!(
                " ({} on connections it accepted: it closes first as the server)",
                o.created_passive
            ));
        }
        if o.process.tgid.is_none() {
            line.push_str(" (sockets that were in TIME_WAIT at the start have no known owner)");
        }
        details.push(line);
    }
    details.extend(pressures.iter().take(5).map(PortPressure::sentence));
    if let Some(max) = over_buckets {
        details.push(format!(
            "at this rate the kernel would hold {:.0} TIME_WAIT sockets, more than net.ipv4.tcp_max_tw_buckets ({max}, per network namespace): past it, closes skip TIME_WAIT (see TCPTimeWaitOverflow)",
            rate * TIME_WAIT_SECS
        ));
    }
    let recycled = input.counters.delta("TcpExt.TWRecycled");
    if let Some(n) = recycled.filter(|&n| n > 0) {
        details.push(format!(
            "tcp_tw_reuse gave {n} TIME_WAIT ports to new outgoing connections during the watch (TcpExt.TWRecycled)"
        ));
    }

    let mut advice = Vec::new();
    let closer = match top {
        Some(top) => format!("here mostly {top}"),
        None => "the sockets seen were in TIME_WAIT before the watch began, and a time-wait socket has no owner: watch longer (--for) to see which program creates them".to_string(),
    };
    advice.push(format!(
        "TIME_WAIT stays with the side that closes first: {closer}. Open fewer connections: reuse them (HTTP keep-alive, a connection pool, persistent connections) in that program or its peers."
    ));
    let passive: u64 = tw.by_owner.iter().map(|o| o.created_passive).sum();
    if passive > 0 {
        advice.push(
            "A server closing the connections it accepted keeps their TIME_WAIT: it holds no ephemeral port there (its local port is the listening port), only kernel memory. Letting the clients close first (keep-alive with the client deciding when to close) moves it to them."
                .to_string(),
        );
    }
    if ports >= Severity::Warning {
        advice.push(tw_reuse_advice(input, &pressures));
        let (low, high) = s.port_range();
        advice.push(format!(
            "Widen net.ipv4.ip_local_port_range (now {low} {high}: {range_size} ports), e.g. to 1024 65535, and list the ports services listen on in net.ipv4.ip_local_reserved_ports so connect() does not take them."
        ));
        advice.push(
            "Each destination IP:port (and each local source address) has its own range of ports: spreading connections over more destination addresses or ports, or more local addresses, multiplies them."
                .to_string(),
        );
    } else if let Some(most) = pressures.first() {
        advice.push(format!(
            "Outgoing connections are not short of ports: TIME_WAIT towards any one destination holds at most {:.1}% of the local port range, and the rate seen does not exhaust it.",
            most.time_wait_share * 100.0
        ));
    }
    Some(Finding {
        id: "time-wait",
        severity,
        title,
        evidence: evidence(&Evidence {
            time_wait_now: tw.now,
            created_during_watch: tw.created,
            created_per_s: rate,
            watch_s: input.watch_secs,
            closed_first_local: tw.closed_first_local,
            closed_first_both: tw.closed_first_both,
            port_range: s.port_range(),
            range_size,
            tw_reuse: s.tw_reuse,
            timestamps: s.timestamps,
            tw_recycled: recycled,
            by_owner: &tw.by_owner[..tw.by_owner.len().min(LISTED)],
            by_destination: pressures,
        }),
        details,
        advice,
    })
}

fn tw_reuse_advice(input: &DoctorInput, pressures: &[PortPressure]) -> String {
    let s = &input.sysctls;
    let mut text = format!(
        "net.ipv4.tcp_tw_reuse (now {}) lets connect() take the port of a TIME_WAIT socket towards the same destination once it is {} old. It only helps outgoing connections, never accepted ones, and needs TCP timestamps on both ends (net.ipv4.tcp_timestamps now {}).",
        value_text(s.tw_reuse),
        duration_text(s.tw_reuse_delay_secs()),
        value_text(s.timestamps),
    );
    match input.kernel.at_least(4, 18) {
        Some(false) => text.push_str(&format!(
            " This kernel ({}) knows 0 (off) and 1 (on); the loopback-only value 2 came with Linux 4.18.",
            input.kernel.release
        )),
        _ => text.push_str(
            " 0 = off, 1 = every destination, 2 = loopback only (the default since Linux 4.18).",
        ),
    }
    if s.timestamps == Some(0) {
        text.push_str(" Timestamps are off here: tcp_tw_reuse cannot work.");
    }
    let remote_pressed = pressures
        .iter()
        .any(|p| !p.loopback && p.severity() >= Severity::Warning);
    let pressed: Vec<&PortPressure> = pressures
        .iter()
        .filter(|p| p.severity() >= Severity::Warning)
        .collect();
    if !pressed.is_empty() && pressed.iter().all(|p| p.tw_reuse_applies) {
        text.push_str(
            " It already applies to the destinations under pressure: without it they would run out of ports, so keep it.",
        );
    }
    if s.tw_reuse == Some(2) && remote_pressed {
        text.push_str(
            " The destinations under pressure are not loopback: the current value 2 does not apply to them; 1 would.",
        );
    }
    text
}
