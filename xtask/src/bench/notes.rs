//! How each figure is measured, and the known facts behind them, written
//! into BENCHMARKS.md with the figures.

use super::phase::Phase;
use super::settings::Settings;
use super::summary::WAKEUPS_PROXY;

pub fn notes(settings: &Settings, sat: &Phase) -> Vec<String> {
    let proxy = sat
        .summary
        .iter()
        .any(|c| c.wakeups_from == Some(WAKEUPS_PROXY));
    let mut n = vec![
        format!(
            "Workload: `tcpstate-churn` (tests/src/bin/tcpstate-churn), a server thread per \
             listening address and {} client threads that connect and close at once, spreading \
             connections over listeners on 127.0.0.2.. and client source addresses 127.1.0.1.. \
             (with IP_BIND_ADDRESS_NO_PORT) so that ports never run out; between namespaces, \
             198.18.0.0/15 on a veth pair. Connections/s is what it achieved. An unmeasured \
             {} s warm-up first fills the TIME_WAIT table (up to tcp_max_tw_buckets), so that \
             every run starts from the same state.",
            settings.saturating.clients, settings.warmup_s
        ),
        format!(
            "Time-wait churn (issue 15): the same generator, saturating, between two network \
             namespaces made for this phase (real addresses, 198.18.0.0/15 on a veth pair, so \
             the kernel's loopback-only time-wait reuse does not apply), the client closes first \
             and keeps the time-wait socket; net.ipv4.tcp_max_tw_buckets there is {}, so that \
             every connection leaves a real time-wait socket instead of finding the table full \
             (the loopback phases start from a full table: most of their connections leave \
             none); after 60 s they expire as fast as new ones come. A {} s unmeasured warm-up \
             first. The count of time-wait sockets where the clients run, at the end of each \
             run, is under each table.",
            settings.tw_buckets, settings.warmup_s
        ),
        "Side by side: each configuration runs once per round, in an order that rotates from \
         round to round; figures are medians over the rounds. 'vs baseline' is the median of \
         each run's rate divided by the untraced rate of the same round."
            .to_string(),
        "Tracer CPU: the tracer process's user + system time (/proc/PID/stat, all threads) \
         from the start of the churn to 300 ms after its end, plus the run time of the tracer's \
         BPF programs (bpf_stats run_time_ns; it runs in the context of the sockets' tasks and \
         softirqs, not in the tracer's), per transition the tracepoint saw in that window (the \
         tracer's program's run_cnt + recursion_misses). Seconds per million transitions are \
         also microseconds per transition."
            .to_string(),
        "Machine CPU added: the whole machine's busy time (/proc/stat) per transition (10 per \
         connection), minus the same round's baseline. It also counts what the tracer costs in \
         the workload's own context (tracepoint dispatch, ring-buffer wake-ups), but it also \
         takes in everything else the machine did meanwhile: on a shared machine it is noisy \
         (a negative figure means the noise exceeded the difference); the targets use the \
         tracer CPU figure."
            .to_string(),
        "kernel.bpf_stats_enabled=1 during the run (restored afterwards): the kernel then \
         times every BPF program run, which adds the same small cost to every program, \
         tcpstate's and bpftrace's alike. BPF ns / transition: the run time of the tracer's \
         programs on sock:inet_sock_set_state in the window per transition: bpftrace has one \
         program there; tcpstate has a raw tracepoint program, and a second raw one (or, where \
         that cannot attach, a classic one) that stands in for the first one's misses \
         (otherwise it only finds the hit among the first one's last few and returns). Their \
         cost per run is in the targets and in the JSON."
            .to_string(),
        "Lost: tcpstate's exit summary (\"L lost in the kernel (F ring full, B ring lock busy, \
         S skipped by the kernel)\"): records that found the ring buffer full, records whose \
         reserve failed with room left in the ring (its lock was not taken; Linux 6.16+ gives \
         up on a lock it finds deadlocked or held too long), plus transitions for which the kernel did not run the program at all: a \
         tracing program was already running on that CPU when a softirq hit the tracepoint \
         (counted per program as recursion_misses). Under saturating churn the kernel sometimes \
         skips tracepoint programs this way; tcpstate runs a raw tracepoint program (guarded \
         on its own) with a second raw program (guarded on its own too) standing in for its \
         misses, so only a transition the kernel skipped both for is lost. bpftrace reports only \"Lost N events\" (its perf \
         buffer full); the bench adds its program's recursion_misses. In parentheses: the \
         recursion_misses of the tracer's programs on the tracepoint; after them, when tcpstate \
         lost any, its own split (full + busy + skipped). Summed over the runs."
            .to_string(),
        "Wake-ups: tcpstate batches them: its program wakes the reader when the backlog grows \
         past 4,096 records (or a quarter of the ring; not again while it stays above: the \
         reader is awake then) or when no wake-up happened for 50 ms, and the reader also \
         drains the ring every 50 ms (so an isolated event still shows at once). A wake-up \
         is an interrupt and a context switch paid inside the BPF program's run, so fewer \
         wake-ups show as fewer BPF ns per transition."
            .to_string(),
        "Peak RSS: VmHWM of the tracer process at the end of its run (bpftrace's includes the \
         LLVM that compiles its script)."
            .to_string(),
        "tcpstate is the release build (`cargo xtask build --release` -> target/x86_64-unknown-linux-gnu/release/tcpstate, linked for glibc 2.17+), \
         run with -v; `trace --json` writes to /dev/null, `stat` to /dev/null (refreshed every \
         second), `serve` listens on a free loopback port and the bench scrapes its /metrics \
         once a second (it renders only for a scrape), `record` to a file in a private temporary directory, removed after each run. \
         bpftrace (default settings) writes to a file in the same directory, read afterwards for \
         \"Lost N events\" and removed; its streaming script prints the tracepoint's fields for \
         each TCP transition, its floor script only counts (`@[args->oldstate, args->newstate] \
         = count();`)."
            .to_string(),
    ];
    if proxy {
        n.push(
            "This tcpstate does not print its wake-up count, so 'transitions / wake-up' is \
             transitions per voluntary context switch of the tracer process (all threads): an \
             upper bound on its wake-ups (also its 50 ms timer and output waits), so a lower \
             bound on transitions per wake-up. bpftrace's figure is measured the same way."
                .to_string(),
        );
    }
    if settings.smoke {
        n.push(
            "SMOKE RUN: tiny counts and a debug build; these figures only show that the bench \
             works, not how fast anything is."
                .to_string(),
        );
    }
    n
}
