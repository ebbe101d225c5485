//! Loading and attaching the BPF program, and draining its ring buffer.
use super::{
    preflight,
    skips::{SkipReading, SkippedTally},
    tracefs, LiveError,
};
use crate::{
    source::{Item, LostCauses, SourceStats},
    tcp::Family,
    wire::decode,
};
use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{FExit, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use std::time::Duration;
use tcpstate_common as common;
use tokio::io::unix::AsyncFd;

/// The BPF object built by `cargo xtask build`, embedded at compile time.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpstate.bpf.o"));

/// Records drained per batch at most, so one busy ring buffer cannot starve
/// the rest of the program (signals, output) and memory stays bounded.
pub const MAX_BATCH: usize = 8192;

/// Even without a wake-up from the kernel, look at the ring this often: the
/// kernel batches wake-ups under load, and a record that arrives just after a
/// batch would otherwise wait for the next one. Also the period at which the
/// lost counter is read.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u64,
    /// Wake userspace once this many bytes wait (default:
    /// [`common::DEFAULT_WAKEUP_RECORDS`] records, or a quarter of a small
    /// ring).
    pub wakeup_bytes: Option<u64>,
    /// Kernel filters; `None` keeps everything.
    pub family: Option<Family>,
    pub any_port: Option<u16>,
    /// Forward the program's aya-log diagnostics to the `log` crate.
    pub diagnostics: bool,
    /// Attach the hooks the connection model needs besides the transitions:
    /// accept() (owners of passive opens) and sent RSTs (time-wait sockets
    /// they destroy). Not needed by `trace`.
    pub lifetime_hooks: bool,
    /// Which transitions carry the task that was on the CPU.
    pub context_task: ContextTask,
}

/// Which transition records carry the task on the CPU (`Transition::task`,
/// `cgroup_id`): reading it is about a fifth of the BPF program's cost per
/// transition, and only `trace` and recordings show it for every one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextTask {
    /// Every transition.
    #[default]
    EveryTransition,
    /// Only connect()'s and listen()'s
    /// ([`common::transition_names_owner`]), the transitions the model
    /// takes owners from; the others carry task 0, an empty name and
    /// cgroup 0.
    OwnerTransitionsOnly,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            ring_bytes: u64::from(common::DEFAULT_RING_BYTES),
            wakeup_bytes: None,
            family: None,
            any_port: None,
            diagnostics: false,
            lifetime_hooks: false,
            context_task: ContextTask::default(),
        }
    }
}

pub struct LiveSource {
    // Field order matters for drop: readers first, then the program (whose
    // drop detaches it from the tracepoint).
    ring: AsyncFd<RingBuf<MapData>>,
    lost_map: PerCpuArray<MapData, u64>,
    flush: tokio::time::Interval,
    stats: SourceStats,
    owner_tracking: OwnerTracking,
    accept_hooks: AcceptHooks,
    reset_tracking: HookStatus,
    /// The connect()/bind() failure programs (issue 11).
    call_failures: HookStatus,
    raw: HookStatus,
    /// The second raw program, standing in for the first one's skips.
    raw_stand_in: HookStatus,
    /// The classic program (off where the second raw program stands in).
    classic: HookStatus,
    /// Whether the kernel counts the hits it skips (Linux 5.12+).
    skip_counting: HookStatus,
    rescued_map: Option<PerCpuArray<MapData, u64>>,
    /// The raw program's taken hits, read only to tell how many slots are
    /// held (tests, diagnostics).
    raw_taken_map: Option<PerCpuArray<MapData, common::RawTaken>>,
    /// Transitions the kernel skipped both set_state programs for.
    skips: SkippedTally,
    /// When the kernel's lost counters were last read.
    lost_checked: std::time::Instant,
    _logger: Option<tokio::task::JoinHandle<()>>,
    _ebpf: Ebpf,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

fn check_ring_size(bytes: u64) -> Result<u32, LiveError> {
    let reason = if !bytes.is_power_of_two() {
        "it must be a power of two (e.g. 4M, 16M, 64M)".to_string()
    } else if bytes < page_size() {
        format!("it must be at least one page ({} bytes)", page_size())
    } else if bytes > 1 << 30 {
        "it must be at most 1G".to_string()
    } else {
        return Ok(bytes as u32);
    };
    Err(LiveError::RingSize { bytes, reason })
}

impl LiveSource {
    /// Checks the system, loads the program with the given settings and
    /// attaches it. Must be called inside a tokio runtime.
    pub fn open(options: &LiveOptions) -> Result<Self, LiveError> {
        if BPF_OBJECT.is_empty() {
            return Err(LiveError::NoBpfObject);
        }
        let ring_bytes = check_ring_size(options.ring_bytes)?;
        preflight::check()?;
        let tracefs = tracefs::ensure_mounted()?;
        tracefs::check_tracepoint(&tracefs)?;
        preflight::raise_memlock_limit();

        let wakeup_bytes = options.wakeup_bytes.unwrap_or(
            (common::DEFAULT_WAKEUP_RECORDS * common::RING_RECORD_BYTES)
                .min(u64::from(ring_bytes) / 4),
        );
        let family = options.family.map_or(0, Family::raw);
        let any_port = options.any_port.unwrap_or(0);
        let interval_ns = FLUSH_INTERVAL.as_nanos() as u64;
        let task_on_every_transition =
            u32::from(options.context_task == ContextTask::EveryTransition);
        // Without BTF offsets the program still traces transitions; only the
        // owner of accepted sockets and the namespace are then unknown.
        let KernelOffsets {
            offsets,
            btf_problem,
            sock_problem,
        } = kernel_offsets();
        if let Some(problem) = &btf_problem {
            log::warn!(
                "{problem}: owners of accepted sockets and network namespaces will be unknown"
            );
        }

        let mut ebpf = EbpfLoader::new()
            .map_max_entries(common::MAP_EVENTS, ring_bytes)
            .override_global(common::GLOBAL_FILTER_FAMILY, &family, true)
            .override_global(common::GLOBAL_FILTER_ANY_PORT, &any_port, true)
            .override_global(common::GLOBAL_WAKEUP_BYTES, &wakeup_bytes, true)
            .override_global(common::GLOBAL_WAKEUP_INTERVAL_NS, &interval_ns, true)
            .override_global(common::GLOBAL_OFFSETS, &offsets, true)
            .override_global(
                common::GLOBAL_TASK_ON_EVERY_TRANSITION,
                &task_on_every_transition,
                true,
            )
            .load(BPF_OBJECT)
            .map_err(|e| load_error(Box::new(e)))?;

        let logger = if options.diagnostics {
            Some(spawn_logger(&mut ebpf)?)
        } else {
            None
        };

        // The raw program first (it then sees every hit), its mode set, and
        // only then the classic one, which from then on stands in for the
        // raw program's misses only: no hit is seen twice, none is missed
        // in between.
        //
        // The stand-in for the raw program's skipped hits: a second raw
        // program where it attaches (after the first, so it runs second),
        // else the classic one. Loaded (verified) before the first is
        // attached, so that the two attaches follow each other at once: the
        // first program's runs in between leave slots no stand-in uses up
        // (see the BPF `taken` module), and its skipped hits there have no
        // stand-in. Loaded in between, it came ~120 ms after the first
        // (~12,000 runs at 100,000 transitions/s, 2026-12-07).
        let (raw, stand_in_loaded) = match btf_problem.as_ref().or(sock_problem.as_ref()) {
            None => {
                // Loaded in attach order: program ids then grow in that
                // order too (`cargo xtask bench` tells the two apart so).
                let raw_loaded = load_raw_program(&mut ebpf, common::PROGRAM_SET_STATE_RAW);
                let stand_in_loaded = load_raw_program(&mut ebpf, common::PROGRAM_SET_STATE_RAW2);
                (attach_raw(&mut ebpf, raw_loaded), stand_in_loaded)
            }
            Some(problem) => (
                HookStatus::Unavailable(format!("struct sock offsets unknown: {problem}")),
                Ok(()),
            ),
        };
        if let HookStatus::Unavailable(why) = &raw {
            log::info!("raw tracepoint off ({why}): the classic tracepoint alone");
        }
        let raw_stand_in = match (&raw, stand_in_loaded) {
            (HookStatus::Attached, Ok(())) => attach_raw_stand_in(&mut ebpf),
            (HookStatus::Attached, Err(why)) => HookStatus::Unavailable(why),
            _ => HookStatus::Off,
        };
        if let HookStatus::Unavailable(why) = &raw_stand_in {
            log::info!("second raw program off ({why}): the classic tracepoint stands in");
        }
        let classic = if raw_stand_in == HookStatus::Attached {
            HookStatus::Off
        } else {
            let program: &mut TracePoint = ebpf
                .program_mut(common::PROGRAM_SET_STATE)
                .ok_or_else(|| {
                    LiveError::NotInObject(format!("program {}", common::PROGRAM_SET_STATE))
                })?
                .try_into()
                .map_err(|e| load_error(Box::new(e)))?;
            program.load().map_err(|e| load_error(Box::new(e)))?;
            program
                .attach(common::TRACEPOINT_CATEGORY, common::TRACEPOINT_NAME)
                .map_err(LiveError::Attach)?;
            HookStatus::Attached
        };

        let (accept_hooks, reset_tracking) = if !options.lifetime_hooks {
            (AcceptHooks::off(), HookStatus::Off)
        } else if offsets.task_files == 0 {
            let why = format!(
                "kernel struct offsets unknown: {}",
                btf_problem.as_deref().unwrap_or("no BTF")
            );
            (AcceptHooks::unavailable(&why), HookStatus::Unavailable(why))
        } else {
            (
                attach_accept(&mut ebpf, &tracefs),
                attach_reset(&mut ebpf, &tracefs),
            )
        };
        let call_failures = if !options.lifetime_hooks {
            HookStatus::Off
        } else if offsets.task_files == 0 || offsets.sk_protocol == 0 {
            HookStatus::Unavailable(format!(
                "kernel struct offsets unknown: {}",
                btf_problem.as_deref().unwrap_or("no BTF")
            ))
        } else if offsets.task_stack == 0 {
            HookStatus::Unavailable("task_struct.stack not in the kernel's BTF".into())
        } else {
            attach_call_failures(&mut ebpf, &tracefs)
        };
        let owner_tracking = accept_hooks.tracking();
        if let HookStatus::Unavailable(why) = &reset_tracking {
            log::warn!("RSTs are not followed ({why}): a time-wait socket a RST destroys stays in the table until it expires");
        }

        let ring = RingBuf::try_from(take_map(&mut ebpf, common::MAP_EVENTS)?)
            .map_err(|e| load_error(Box::new(e)))?;
        let lost_map = PerCpuArray::try_from(take_map(&mut ebpf, common::MAP_LOST)?)
            .map_err(|e| load_error(Box::new(e)))?;
        let rescued_map = ebpf
            .take_map(common::MAP_RESCUED)
            .and_then(|map| PerCpuArray::try_from(map).ok());
        let raw_taken_map = ebpf
            .take_map(common::MAP_RAW_TAKEN)
            .and_then(|map| PerCpuArray::try_from(map).ok());
        let skip_counting = skip_counting(&ebpf);
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let source = Self {
            ring: register_readable(ring)?,
            lost_map,
            flush,
            // A live source can tell why it loses transitions: none yet.
            stats: SourceStats {
                lost_causes: Some(LostCauses::default()),
                ..SourceStats::default()
            },
            owner_tracking,
            accept_hooks,
            reset_tracking,
            call_failures,
            raw,
            raw_stand_in,
            classic,
            skip_counting,
            rescued_map,
            raw_taken_map,
            skips: SkippedTally::default(),
            lost_checked: std::time::Instant::now(),
            _logger: logger,
            _ebpf: ebpf,
        };
        for program in source.programs() {
            log::info!(
                "program {} on {} ({}): {}",
                program.program,
                program.hook,
                program.purpose,
                program.status_text()
            );
        }
        match &source.skip_counting {
            HookStatus::Unavailable(why) => log::warn!(
                "transitions the kernel skips are not counted as lost ({why}); ring-buffer losses still are"
            ),
            _ => log::info!("transitions the kernel skips are counted (recursion_misses)"),
        }
        Ok(source)
    }

    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// Whether accept() owners are being reported, and if not, why.
    pub fn owner_tracking(&self) -> &OwnerTracking {
        &self.owner_tracking
    }

    /// Whether RSTs the host sends are being reported, and if not, why.
    pub fn reset_tracking(&self) -> &HookStatus {
        &self.reset_tracking
    }

    /// Sum of the kernel's per-CPU lost counters of one kind of record.
    fn read_lost(&self, slot: u32) -> u64 {
        match self.lost_map.get(&slot, 0) {
            Ok(per_cpu) => per_cpu.iter().sum(),
            Err(e) => {
                // Said once: an unreadable counter must not pass for "none
                // lost" (capabilities dropped too far would do this).
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    log::warn!(
                        "the kernel's lost-event counters cannot be read ({e}); losses are not counted"
                    );
                });
                0
            }
        }
    }

    /// Transitions no program recorded because the kernel skipped it. With
    /// the raw program, a hit is lost only when the kernel skipped the raw
    /// program and no stand-in answered for it (see [`super::skips`]);
    /// alone, the classic program's skips are the loss.
    fn skipped_transitions(&mut self) -> u64 {
        if self.raw != HookStatus::Attached {
            return self.read_misses(&[common::PROGRAM_SET_STATE]);
        }
        let reading = self.skip_reading();
        self.skips.update(reading)
    }

    /// The raw program's misses, then the rescued count (in this order).
    fn skip_reading(&self) -> SkipReading {
        let misses = self.read_misses(&[common::PROGRAM_SET_STATE_RAW]);
        let rescued = self
            .rescued_map
            .as_ref()
            .and_then(|map| map.get(&0, 0).ok())
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0);
        SkipReading { misses, rescued }
    }

    /// Slots of the raw program's taken hits held now, over all CPUs; `None`
    /// when the map cannot be read. At rest (no transition under way) a
    /// held slot is one no stand-in will use up (see the BPF `taken`
    /// module).
    pub fn stand_in_slots_held(&self) -> Option<usize> {
        let per_cpu = self.raw_taken_map.as_ref()?.get(&0, 0).ok()?;
        Some(per_cpu.iter().map(common::RawTaken::held).sum())
    }

    /// Whether the raw tracepoint is in use (see [`common::PROGRAM_SET_STATE_RAW`]).
    pub fn raw_tracepoint(&self) -> &HookStatus {
        &self.raw
    }

    /// Each program of the object: where it attaches, what it is for, and
    /// whether it is attached (if not, why).
    pub fn programs(&self) -> Vec<ProgramStatus> {
        let (fexit, fexit_status) = &self.accept_hooks.fexit;
        vec![
            ProgramStatus {
                program: common::PROGRAM_SET_STATE_RAW,
                hook: "raw tracepoint inet_sock_set_state",
                purpose: "transitions (never skipped while another program runs)",
                status: self.raw.clone(),
            },
            ProgramStatus {
                program: common::PROGRAM_SET_STATE_RAW2,
                hook: "raw tracepoint inet_sock_set_state",
                purpose: "transitions the first raw program missed",
                status: self.raw_stand_in.clone(),
            },
            ProgramStatus {
                program: common::PROGRAM_SET_STATE,
                hook: "tracepoint sock:inet_sock_set_state",
                purpose: if self.raw == HookStatus::Attached {
                    "transitions the raw program missed"
                } else {
                    "transitions"
                },
                status: self.classic.clone(),
            },
            ProgramStatus {
                program: common::PROGRAM_ACCEPT4_EXIT,
                hook: "tracepoint syscalls:sys_exit_accept4 (and sys_exit_accept)",
                purpose: "owners of accepted sockets",
                status: self.accept_hooks.syscalls.clone(),
            },
            ProgramStatus {
                program: fexit,
                hook: "fexit inet_csk_accept",
                purpose: "owners of sockets accepted without accept() (io_uring)",
                status: fexit_status.clone(),
            },
            ProgramStatus {
                program: common::PROGRAM_SEND_RESET,
                hook: "tracepoint tcp:tcp_send_reset",
                purpose: "RSTs that end time-wait sockets",
                status: self.reset_tracking.clone(),
            },
            ProgramStatus {
                program: common::PROGRAM_CONNECT_EXIT,
                hook: "tracepoints syscalls:sys_exit_connect and sys_exit_bind",
                purpose: "failed connect() and bind() calls",
                status: self.call_failures.clone(),
            },
        ]
    }

    /// Whether the kernel counts the hits it skipped (part of the lost
    /// count), and if not, why.
    pub fn skip_counting(&self) -> &HookStatus {
        &self.skip_counting
    }

    /// Per program, the times the kernel skipped it (see [`super::misses`]).
    pub fn misses_by_program(&self) -> Vec<(&'static str, u64)> {
        [
            common::PROGRAM_SET_STATE,
            common::PROGRAM_ACCEPT4_EXIT,
            common::PROGRAM_ACCEPT_EXIT,
            common::PROGRAM_ACCEPT_FEXIT4,
            common::PROGRAM_ACCEPT_FEXIT2,
            common::PROGRAM_SEND_RESET,
            common::PROGRAM_SET_STATE_RAW,
            common::PROGRAM_CONNECT_EXIT,
            common::PROGRAM_BIND_EXIT,
            common::PROGRAM_SET_STATE_RAW2,
        ]
        .into_iter()
        .map(|name| (name, self.read_misses(&[name])))
        .collect()
    }

    /// Times the kernel skipped these programs (see [`super::misses`]).
    fn read_misses(&self, programs: &[&str]) -> u64 {
        programs
            .iter()
            .filter_map(|name| {
                let program = self._ebpf.program(name)?;
                super::misses::recursion_misses(program.fd().ok()?)
            })
            .sum()
    }

    /// Waits until records are available (or the flush interval passes), then
    /// appends at most [`MAX_BATCH`] items to `out`. Cancel-safe: nothing is
    /// taken from the ring until the wait is over.
    pub async fn next_batch(&mut self, out: &mut Vec<Item>) -> Result<(), LiveError> {
        let woken = tokio::select! {
            guard = self.ring.readable_mut() => Some(guard?),
            _ = self.flush.tick() => None,
        };
        let drained_all = match woken {
            Some(mut guard) => {
                self.stats.wakeups += 1;
                let drained_all = drain(guard.get_inner_mut(), out, &mut self.stats);
                if drained_all {
                    guard.clear_ready();
                }
                drained_all
            }
            None => drain(self.ring.get_mut(), out, &mut self.stats),
        };
        // Only once the ring is empty, so that the count is in order with
        // the records before it, and at most once per flush interval: it
        // takes a syscall per counter and per program, which at thousands
        // of wake-ups a second would cost more than the records.
        if drained_all && self.lost_checked.elapsed() >= FLUSH_INTERVAL {
            self.push_lost(out);
        }
        Ok(())
    }

    /// Drains what is left and reports the final lost count.
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        while !drain(self.ring.get_mut(), out, &mut self.stats) {}
        if self.raw == HookStatus::Attached {
            // A second reading, a moment after the first, confirms a skip
            // loss that only the last reading shows (see `super::skips`).
            self.skipped_transitions();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.push_lost(out);
    }

    fn push_lost(&mut self, out: &mut Vec<Item>) {
        self.lost_checked = std::time::Instant::now();
        self.stats.lost_resets =
            self.read_lost(common::LOST_RESETS) + self.read_misses(&[common::PROGRAM_SEND_RESET]);
        let accept = [
            common::PROGRAM_ACCEPT4_EXIT,
            common::PROGRAM_ACCEPT_EXIT,
            common::PROGRAM_ACCEPT_FEXIT4,
            common::PROGRAM_ACCEPT_FEXIT2,
        ];
        self.stats.lost_owners = self.read_lost(common::LOST_OWNERS) + self.read_misses(&accept);
        self.stats.lost_call_failures = self.read_lost(common::LOST_CONNECT_FAILURES)
            + self.read_lost(common::LOST_BIND_FAILURES)
            + self.read_misses(&[common::PROGRAM_CONNECT_EXIT, common::PROGRAM_BIND_EXIT]);
        let in_ring = self.read_lost(common::LOST_TRANSITIONS);
        // Read after the total it is part of: never more than it.
        let busy = self
            .read_lost(common::LOST_TRANSITIONS_RING_BUSY)
            .min(in_ring);
        let skipped = self.skipped_transitions();
        self.stats.lost_causes = Some(LostCauses {
            ring_full: in_ring - busy,
            ring_busy: busy,
            skipped,
        });
        let total = in_ring + skipped;
        if total != self.stats.lost {
            self.stats.lost = total;
            out.push(Item::Lost {
                total,
                ts_boot_ns: crate::clock::boot_now_ns(),
            });
        }
    }
}

/// Copies up to [`MAX_BATCH`] records out of the ring; true when it is empty.
/// Items are released as soon as they are decoded; nothing is held across an
/// await.
fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Item>, stats: &mut SourceStats) -> bool {
    for _ in 0..MAX_BATCH {
        let Some(item) = ring.next() else {
            return true;
        };
        match decode(&item) {
            Ok(item) => {
                match item {
                    Item::Transition(_) => stats.delivered += 1,
                    Item::Accepted(_) => stats.owners += 1,
                    Item::ResetSent(_) => stats.resets += 1,
                    Item::CallFailed(_) => stats.call_failures += 1,
                    // Not record kinds: decode never returns them.
                    Item::Lost { .. } | Item::Kill(_) => {}
                }
                out.push(item);
            }
            Err(e) => {
                stats.malformed += 1;
                log::warn!("skipping a malformed record from the kernel: {e}");
            }
        }
    }
    false
}

/// Registers a BPF map reader with the tokio reactor.
fn register_readable<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>, LiveError> {
    // SAFETY: `inner` (a ring buffer reader) owns its map's file descriptor
    // for as long as it lives, and the AsyncFd owns `inner`, so the fd stays
    // open and unchanged for the AsyncFd's whole lifetime.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| LiveError::Read(e.into()))
}

/// One BPF program of the object and its state on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    pub program: &'static str,
    /// Where it attaches.
    pub hook: &'static str,
    /// What it gives.
    pub purpose: &'static str,
    pub status: HookStatus,
}

impl ProgramStatus {
    /// `attached`, `off`, or `unavailable: WHY`.
    pub fn status_text(&self) -> String {
        match &self.status {
            HookStatus::Attached => "attached".into(),
            HookStatus::Off => "off (not needed here)".into(),
            HookStatus::Unavailable(why) => format!("unavailable: {why}"),
        }
    }
}

/// How owners of accepted sockets are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerTracking {
    /// Not asked for.
    Off,
    /// `syscalls:sys_exit_accept{,4}` report each accepted socket's process.
    Accept,
    /// Not available here (the reason); accepted sockets get no owner unless
    /// the start-up snapshot names one.
    Unavailable(String),
}

/// Set (to anything but `0` or empty) to make tcpstate behave as on a
/// kernel without BTF: the degraded mode a test can reach on any kernel.
pub const IGNORE_BTF_ENV: &str = "TCPSTATE_IGNORE_BTF";

fn btf_ignored() -> bool {
    std::env::var_os(IGNORE_BTF_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether the kernel reports `recursion_misses` for our classic program.
fn skip_counting(ebpf: &Ebpf) -> HookStatus {
    // Whichever of the two programs on the tracepoint is loaded (a program
    // not loaded has no fd).
    let counted = [common::PROGRAM_SET_STATE_RAW, common::PROGRAM_SET_STATE]
        .into_iter()
        .find_map(|name| ebpf.program(name).and_then(|p| p.fd().ok()))
        .and_then(super::misses::recursion_misses)
        .is_some();
    if counted {
        HookStatus::Attached
    } else {
        HookStatus::Unavailable(format!(
            "kernel {} reports no recursion_misses (Linux 5.12+)",
            preflight::kernel_release()
        ))
    }
}

/// Kernel struct offsets from BTF, and what kept them unknown.
struct KernelOffsets {
    /// Zero where unknown.
    offsets: common::StructOffsets,
    /// Why none are known (no BTF, or not what we need).
    btf_problem: Option<String>,
    /// Why only the raw program's are unknown.
    sock_problem: Option<String>,
}

fn kernel_offsets() -> KernelOffsets {
    let mut offsets = common::StructOffsets::zeroed();
    let btf = if btf_ignored() {
        Err(super::btf::BtfError::Ignored {
            var: IGNORE_BTF_ENV,
        })
    } else {
        super::btf::Btf::from_file(std::path::Path::new(super::btf::VMLINUX_BTF))
    };
    let btf = match btf.and_then(|btf| {
        super::btf::fill_kernel_offsets(&btf, &mut offsets)?;
        Ok(btf)
    }) {
        Ok(btf) => btf,
        Err(e) => {
            return KernelOffsets {
                offsets: common::StructOffsets::zeroed(),
                btf_problem: Some(e.to_string()),
                sock_problem: None,
            }
        }
    };
    // Without these only the raw program stays off (the sk_protocol
    // bitfield of kernels before 5.6, for instance).
    let sock_problem = super::btf::fill_sock_offsets(&btf, &mut offsets)
        .err()
        .map(|e| e.to_string());
    if let Some(problem) = &sock_problem {
        log::warn!("{problem}: the raw tracepoint stays off");
    }
    KernelOffsets {
        offsets,
        btf_problem: None,
        sock_problem,
    }
}

/// Whether an optional hook is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookStatus {
    Off,
    Attached,
    /// Not available here, and why.
    Unavailable(String),
}

/// Checks an optional tracepoint's format, then loads and attaches its
/// program. Failure is not fatal: transitions are still traced.
fn attach_hook(
    ebpf: &mut Ebpf,
    tracefs: &std::path::Path,
    program: &str,
    (category, tracepoint): (&str, &str),
    expected: &[(&str, usize, usize)],
) -> HookStatus {
    let format = tracefs
        .join("events")
        .join(category)
        .join(tracepoint)
        .join("format");
    let result = std::fs::read_to_string(&format)
        .map_err(|e| format!("{}: {e}", format.display()))
        .and_then(|text| {
            tracefs::check_fields(&text, expected)
                .map_err(|e| format!("{category}:{tracepoint}: {e}"))
        })
        .and_then(|()| {
            let program: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} not in the object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            program.load().map_err(|e| chain(&e))?;
            program
                .attach(category, tracepoint)
                .map_err(|e| chain(&e))?;
            Ok(())
        });
    match result {
        Ok(()) => HookStatus::Attached,
        Err(e) => HookStatus::Unavailable(e),
    }
}

/// Attaches the RST program where the kernel's tcp:tcp_send_reset reports
/// RSTs sent without a socket (see [`common::reset_offsets::SOCKADDR_SOURCE`]):
/// elsewhere it would never see the RSTs the model follows.
fn attach_reset(ebpf: &mut Ebpf, tracefs: &std::path::Path) -> HookStatus {
    let format = tracefs
        .join("events")
        .join(common::TCP_CATEGORY)
        .join(common::SEND_RESET)
        .join("format");
    let text = std::fs::read_to_string(&format).unwrap_or_default();
    if !text.is_empty()
        && tracefs::check_fields(&text, &[common::reset_offsets::SOCKADDR_SOURCE]).is_err()
    {
        return HookStatus::Unavailable(
            "this kernel's tcp:tcp_send_reset predates Linux 6.10: it does not report RSTs \
             sent without a socket, the ones that end time-wait sockets"
                .into(),
        );
    }
    attach_hook(
        ebpf,
        tracefs,
        common::PROGRAM_SEND_RESET,
        (common::TCP_CATEGORY, common::SEND_RESET),
        &common::reset_offsets::EXPECTED,
    )
}

/// Loads one of the raw tracepoint programs (the verifier's work), without
/// attaching it.
fn load_raw_program(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    raw_program(ebpf, name)?.load().map_err(|e| chain(&e))
}

/// One of the raw tracepoint programs of the object.
fn raw_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut RawTracePoint, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} not in the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}

/// Attaches the raw tracepoint program (loaded by [`load_raw_program`],
/// with `loaded` its outcome), then tells the classic program it is there.
fn attach_raw(ebpf: &mut Ebpf, loaded: Result<(), String>) -> HookStatus {
    let attached = (|| -> Result<(), String> {
        loaded?;
        raw_program(ebpf, common::PROGRAM_SET_STATE_RAW)?
            .attach(common::TRACEPOINT_NAME)
            .map_err(|e| chain(&e))?;
        let mut mode: Array<&mut MapData, u32> = Array::try_from(
            ebpf.map_mut(common::MAP_RAW_MODE)
                .ok_or("map RAW_MODE not in the object")?,
        )
        .map_err(|e| e.to_string())?;
        mode.set(0, 1, 0).map_err(|e| e.to_string())
    })();
    match attached {
        Ok(()) => HookStatus::Attached,
        Err(e) => HookStatus::Unavailable(e),
    }
}

/// Attaches the second raw tracepoint program (loaded by
/// [`load_raw_program`]), after the first: it then runs second for every
/// hit (see [`common::PROGRAM_SET_STATE_RAW2`]).
fn attach_raw_stand_in(ebpf: &mut Ebpf) -> HookStatus {
    let attached = (|| -> Result<(), String> {
        raw_program(ebpf, common::PROGRAM_SET_STATE_RAW2)?
            .attach(common::TRACEPOINT_NAME)
            .map(drop)
            .map_err(|e| chain(&e))
    })();
    match attached {
        Ok(()) => HookStatus::Attached,
        Err(e) => HookStatus::Unavailable(e),
    }
}

/// The programs that name the owners of accepted sockets.
struct AcceptHooks {
    /// The fexit program on `inet_csk_accept` (the variant that loaded).
    fexit: (&'static str, HookStatus),
    /// The accept() and accept4() exit tracepoints.
    syscalls: HookStatus,
}

impl AcceptHooks {
    fn unavailable(why: &str) -> AcceptHooks {
        AcceptHooks {
            fexit: (
                common::PROGRAM_ACCEPT_FEXIT2,
                HookStatus::Unavailable(why.to_string()),
            ),
            syscalls: HookStatus::Unavailable(why.to_string()),
        }
    }

    fn off() -> AcceptHooks {
        AcceptHooks {
            fexit: (common::PROGRAM_ACCEPT_FEXIT2, HookStatus::Off),
            syscalls: HookStatus::Off,
        }
    }

    fn tracking(&self) -> OwnerTracking {
        match (&self.fexit.1, &self.syscalls) {
            (HookStatus::Attached, _) | (_, HookStatus::Attached) => OwnerTracking::Accept,
            (HookStatus::Off, HookStatus::Off) => OwnerTracking::Off,
            (_, HookStatus::Unavailable(why)) | (HookStatus::Unavailable(why), _) => {
                OwnerTracking::Unavailable(why.clone())
            }
        }
    }
}

/// The accept() and accept4() exit tracepoints (either of the two is
/// enough), and, where the kernel allows tracing programs, the fexit program
/// on `inet_csk_accept` for the accepts that go through neither (io_uring).
/// Both, not one or the other: an fexit program does not see a call that
/// was already running when it was attached, such as an accept() blocked
/// while tcpstate starts; the tracepoint at its exit does. An owner seen
/// twice is the same owner.
fn attach_accept(ebpf: &mut Ebpf, tracefs: &std::path::Path) -> AcceptHooks {
    let fexit = attach_accept_fexit(ebpf);
    let mut problems = Vec::new();
    let mut attached = false;
    for (program, tracepoint) in [
        (common::PROGRAM_ACCEPT4_EXIT, common::ACCEPT4_EXIT),
        (common::PROGRAM_ACCEPT_EXIT, common::ACCEPT_EXIT),
    ] {
        match attach_hook(
            ebpf,
            tracefs,
            program,
            (common::SYSCALLS_CATEGORY, tracepoint),
            &common::syscall_exit_offsets::EXPECTED,
        ) {
            HookStatus::Attached => attached = true,
            HookStatus::Unavailable(why) => problems.push(why),
            HookStatus::Off => {}
        }
    }
    AcceptHooks {
        fexit,
        syscalls: if attached {
            HookStatus::Attached
        } else {
            HookStatus::Unavailable(problems.join("; "))
        },
    }
}

/// Loads the variant of the fexit program that fits this kernel's
/// `inet_csk_accept` and attaches it. The four-argument one first: it reads
/// the return value at index 4, which the verifier refuses where the
/// function has two arguments (6.10+). The other way round would not do:
/// where there are four, index 2 is an argument (`int *err`) that newer
/// verifiers let a program read.
fn attach_accept_fexit(ebpf: &mut Ebpf) -> (&'static str, HookStatus) {
    let btf = match aya::Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            return (
                common::PROGRAM_ACCEPT_FEXIT2,
                HookStatus::Unavailable(format!("kernel BTF: {e}")),
            )
        }
    };
    let mut why = String::new();
    for name in [common::PROGRAM_ACCEPT_FEXIT4, common::PROGRAM_ACCEPT_FEXIT2] {
        let attached = (|| -> Result<(), String> {
            let program: &mut FExit = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} not in the object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            program
                .load(common::ACCEPT_FUNCTION, &btf)
                .map_err(|e| match &e {
                    aya::programs::ProgramError::LoadError { io_error, .. }
                        if io_error.raw_os_error() == Some(libc::EPERM) =>
                    {
                        "the kernel refuses tracing programs (fentry/fexit) here: EPERM, \
                         as under kernel lockdown"
                            .to_string()
                    }
                    _ => chain(&e),
                })?;
            program.attach().map_err(|e| chain(&e))?;
            Ok(())
        })();
        match attached {
            Ok(()) => return (name, HookStatus::Attached),
            // Keep the last problem: the first is the same, or the verifier
            // refusing the variant that does not fit.
            Err(e) => why = first_line(&e),
        }
    }
    (common::PROGRAM_ACCEPT_FEXIT2, HookStatus::Unavailable(why))
}

/// The first line of a message, at most 200 characters (a verifier log can
/// be thousands of lines).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LiveError> {
    ebpf.take_map(name)
        .ok_or_else(|| LiveError::NotInObject(format!("map {name}")))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// A failed load: lack of privilege when the kernel answered EPERM or
/// EACCES anywhere down the error's chain of causes.
fn load_error(e: Box<dyn std::error::Error + Send + Sync>) -> LiveError {
    if denied_by_errno(e.as_ref()) {
        LiveError::NotPrivileged {
            detail: format!(" (the kernel said: {})", chain(e.as_ref())),
        }
    } else {
        LiveError::Load(e)
    }
}

/// Whether an `std::io::Error` with EPERM or EACCES is among the causes.
fn denied_by_errno(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(error) = cause {
        let errno = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error);
        if matches!(errno, Some(libc::EPERM | libc::EACCES)) {
            return true;
        }
        cause = error.source();
    }
    false
}

fn spawn_logger(ebpf: &mut Ebpf) -> Result<tokio::task::JoinHandle<()>, LiveError> {
    let logger = aya_log::EbpfLogger::init(ebpf).map_err(|e| LiveError::Load(Box::new(e)))?;
    let mut logger = register_readable(logger)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

/// A tracepoint field as its format file must show it: name, offset, size.
type FormatField = (&'static str, usize, usize);

/// The two programs that report failed connect() and bind() calls (issue
/// 11), each after a check of its tracepoint's format. Both or none.
fn attach_call_failures(ebpf: &mut Ebpf, tracefs: &std::path::Path) -> HookStatus {
    let exit = &common::syscall_exit_offsets::EXPECTED;
    let hooks: [(&str, &str, &[FormatField]); 2] = [
        (common::PROGRAM_CONNECT_EXIT, common::CONNECT_EXIT, exit),
        (common::PROGRAM_BIND_EXIT, common::BIND_EXIT, exit),
    ];
    for (program, tracepoint, expected) in hooks {
        let status = attach_hook(
            ebpf,
            tracefs,
            program,
            (common::SYSCALLS_CATEGORY, tracepoint),
            expected,
        );
        if status != HookStatus::Attached {
            // Dropping the program object detaches what was attached.
            for (attached, _, _) in hooks {
                let program: Option<&mut TracePoint> =
                    ebpf.program_mut(attached).and_then(|p| p.try_into().ok());
                if let Some(program) = program {
                    let _ = program.unload();
                }
            }
            return status;
        }
    }
    HookStatus::Attached
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_are_recognised_by_errno_anywhere_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let denied = Outer(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(
            load_error(Box::new(denied)),
            LiveError::NotPrivileged { .. }
        ));
        let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(
            load_error(Box::new(eacces)),
            LiveError::NotPrivileged { .. }
        ));
        // The text alone does not decide: the errno does.
        let worded = std::io::Error::other("Operation not permitted");
        assert!(matches!(load_error(Box::new(worded)), LiveError::Load(_)));
        let invalid = Outer(std::io::Error::from_raw_os_error(libc::EINVAL));
        let err = load_error(Box::new(invalid));
        assert!(matches!(err, LiveError::Load(_)));
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("outer"), "typed source kept");
    }

    #[test]
    fn ring_size_must_be_a_power_of_two_of_pages() {
        assert_eq!(check_ring_size(16 << 20).unwrap(), 16 << 20);
        assert!(check_ring_size(page_size()).is_ok());
        assert!(check_ring_size(3 << 20).is_err());
        assert!(check_ring_size(1024).is_err());
        assert!(check_ring_size(2 << 30).is_err());
        let err = check_ring_size(3000).unwrap_err().to_string();
        assert!(
            err.contains("--ring-size 3000") && err.contains("power of two"),
            "{err}"
        );
    }
}
