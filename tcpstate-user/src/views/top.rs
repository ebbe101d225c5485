//! The `top` view: one row per process with its sockets by state, the
//! TIME_WAIT it caused, its CLOSE_WAIT suspects and its open and close
//! rates; a header with the totals. Everything here is pure: rows are built
//! from the model's reports, keys change a [`Ui`], and [`render`] draws a
//! [`TopState`] into a ratatui [`Buffer`].
use crate::{
    model::{LeakReport, StateCounts},
    tcp::TcpState,
};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::{
    buffer::Buffer,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table, Widget, Wrap},
};
use std::{cmp::Ordering, collections::BTreeMap};

/// The table's columns, in display order; every one can be sorted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Pid,
    Comm,
    Total,
    Established,
    SynSent,
    SynRecv,
    /// FIN_WAIT1 + FIN_WAIT2.
    FinWait,
    Closing,
    TimeWait,
    CloseWait,
    LastAck,
    Listen,
    /// CLOSE_WAIT older than the leak threshold.
    Suspects,
    OpenRate,
    CloseRate,
}

impl Column {
    pub const ALL: [Column; 15] = [
        Column::Pid,
        Column::Comm,
        Column::Total,
        Column::Established,
        Column::SynSent,
        Column::SynRecv,
        Column::FinWait,
        Column::Closing,
        Column::TimeWait,
        Column::CloseWait,
        Column::LastAck,
        Column::Listen,
        Column::Suspects,
        Column::OpenRate,
        Column::CloseRate,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Pid => "PID",
            Column::Comm => "COMM",
            Column::Total => "TOTAL",
            Column::Established => "ESTAB",
            Column::SynSent => "SYN_SENT",
            Column::SynRecv => "SYN_RECV",
            Column::FinWait => "FIN_WAIT*",
            Column::Closing => "CLOSING",
            Column::TimeWait => "TIME_WAIT",
            Column::CloseWait => "CLOSE_WAIT",
            Column::LastAck => "LAST_ACK",
            Column::Listen => "LISTEN",
            Column::Suspects => "CW_LEAK",
            Column::OpenRate => "OPEN/s",
            Column::CloseRate => "CLOSE/s",
        }
    }

    fn width(self) -> u16 {
        match self {
            // Up to pid_max (4194304).
            Column::Pid => 7,
            // TASK_COMM_LEN - 1.
            Column::Comm => 15,
            // Title plus the sort arrow.
            other => other.title().len() as u16 + 1,
        }
    }

    /// The columns a narrow screen drops first (PID and COMM stay).
    const DROPPED_FIRST: [Column; 13] = [
        Column::Closing,
        Column::LastAck,
        Column::SynRecv,
        Column::Listen,
        Column::SynSent,
        Column::FinWait,
        Column::CloseRate,
        Column::OpenRate,
        Column::Established,
        Column::Suspects,
        Column::TimeWait,
        Column::CloseWait,
        Column::Total,
    ];

    /// Names sort A to Z; counts and rates largest first.
    pub fn default_descending(self) -> bool {
        !matches!(self, Column::Pid | Column::Comm)
    }

    fn index(self) -> usize {
        Column::ALL.iter().position(|&c| c == self).unwrap_or(0)
    }

    pub fn next(self) -> Column {
        Column::ALL[(self.index() + 1) % Column::ALL.len()]
    }

    pub fn prev(self) -> Column {
        Column::ALL[(self.index() + Column::ALL.len() - 1) % Column::ALL.len()]
    }

    /// The states a state column counts.
    fn states(self) -> &'static [TcpState] {
        match self {
            Column::Established => &[TcpState::Established],
            Column::SynSent => &[TcpState::SynSent],
            Column::SynRecv => &[TcpState::SynRecv, TcpState::NewSynRecv],
            Column::FinWait => &[TcpState::FinWait1, TcpState::FinWait2],
            Column::Closing => &[TcpState::Closing],
            Column::TimeWait => &[TcpState::TimeWait],
            Column::CloseWait => &[TcpState::CloseWait],
            Column::LastAck => &[TcpState::LastAck],
            Column::Listen => &[TcpState::Listen],
            _ => &[],
        }
    }
}

/// Open and close rates of one process over the last interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    pub comm: Option<String>,
    pub open_per_s: f64,
    pub close_per_s: f64,
}

/// One process (or all sockets of unknown owner: `tgid` None).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRow {
    pub tgid: Option<u32>,
    pub comm: String,
    /// `namespace/pod` when the process is in a Kubernetes pod.
    pub pod: Option<String>,
    /// Its sockets by state, TIME_WAIT included (the time-wait sockets its
    /// connections left, attributed to it).
    pub states: BTreeMap<TcpState, usize>,
    /// CLOSE_WAIT sockets older than the leak threshold.
    pub suspects: usize,
    pub open_per_s: f64,
    pub close_per_s: f64,
}

pub const UNKNOWN_OWNER: &str = "(unknown)";

impl ProcessRow {
    fn new(tgid: Option<u32>, comm: Option<String>) -> ProcessRow {
        ProcessRow {
            tgid,
            comm: match tgid {
                None => UNKNOWN_OWNER.to_string(),
                Some(_) => comm.unwrap_or_else(|| "?".to_string()),
            },
            pod: None,
            states: BTreeMap::new(),
            suspects: 0,
            open_per_s: 0.0,
            close_per_s: 0.0,
        }
    }

    pub fn count(&self, state: TcpState) -> usize {
        self.states.get(&state).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.states.values().sum()
    }

    fn number(&self, column: Column) -> f64 {
        match column {
            Column::Pid => self.tgid.map_or(-1.0, f64::from),
            Column::Comm => 0.0,
            Column::Total => self.total() as f64,
            Column::Suspects => self.suspects as f64,
            Column::OpenRate => self.open_per_s,
            Column::CloseRate => self.close_per_s,
            states => states
                .states()
                .iter()
                .map(|&s| self.count(s))
                .sum::<usize>() as f64,
        }
    }

    fn cell(&self, column: Column) -> String {
        match column {
            Column::Pid => self.tgid.map_or("?".to_string(), |t| t.to_string()),
            Column::Comm => match &self.pod {
                Some(pod) => format!("{} [{pod}]", self.comm),
                None => self.comm.clone(),
            },
            Column::OpenRate | Column::CloseRate => rate(self.number(column)),
            other => count(self.number(other) as usize),
        }
    }

    /// Case-insensitive substring of the command name, of the pod
    /// (`namespace/pod`), or of the pid.
    pub fn matches(&self, filter: &str) -> bool {
        let filter = filter.to_lowercase();
        self.comm.to_lowercase().contains(&filter)
            || self
                .pod
                .as_ref()
                .is_some_and(|p| p.to_lowercase().contains(&filter))
            || self.tgid.is_some_and(|t| t.to_string().contains(&filter))
    }
}

/// Zero as `-`, so that the non-zero counts stand out.
fn count(n: usize) -> String {
    if n == 0 {
        "-".to_string()
    } else {
        n.to_string()
    }
}

fn rate(r: f64) -> String {
    if r == 0.0 {
        "-".to_string()
    } else if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

/// Rows per process from the model's counts (sockets per state, TIME_WAIT
/// by owner), its leak report, and the rates measured by the view. A
/// process with no socket now but some opened or closed in the interval
/// gets a row too. `pod_of` gives the Kubernetes pod of an owner's cgroup
/// id, when the host shows one.
pub fn build_rows(
    counts: &StateCounts,
    leaks: &LeakReport,
    rates: &BTreeMap<Option<u32>, Rates>,
    pod_of: &mut dyn FnMut(u64) -> Option<crate::source::kubernetes::Pod>,
) -> Vec<ProcessRow> {
    let mut rows: BTreeMap<Option<u32>, ProcessRow> = BTreeMap::new();
    let mut pod = |row: &mut ProcessRow, cgroup_id: u64| {
        if row.pod.is_none() && row.tgid.is_some() {
            row.pod = pod_of(cgroup_id).map(|p| format!("{}/{}", p.namespace, p.name));
        }
    };
    for p in &counts.by_process {
        let row = rows
            .entry(p.tgid)
            .or_insert_with(|| ProcessRow::new(p.tgid, p.comm.map(|c| c.as_string())));
        pod(row, p.cgroup_id);
        for (state, n) in &p.states {
            *row.states.entry(*state).or_insert(0) += n;
        }
    }
    for leak in &leaks.by_owner {
        let row = rows
            .entry(leak.tgid)
            .or_insert_with(|| ProcessRow::new(leak.tgid, leak.comm.map(|c| c.as_string())));
        pod(row, leak.cgroup_id);
        row.suspects += leak.count;
    }
    for (tgid, r) in rates {
        if r.open_per_s == 0.0 && r.close_per_s == 0.0 {
            continue;
        }
        let row = rows
            .entry(*tgid)
            .or_insert_with(|| ProcessRow::new(*tgid, r.comm.clone()));
        row.open_per_s = r.open_per_s;
        row.close_per_s = r.close_per_s;
    }
    rows.into_values().collect()
}

/// What the keys change: sorting, filtering, scrolling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ui {
    pub sort: Column,
    pub descending: bool,
    /// The filter applied (a substring of the command name or pid).
    pub filter: Option<String>,
    /// The filter being typed after `/`, not applied yet.
    pub editing: Option<String>,
    /// First row shown.
    pub offset: usize,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            sort: Column::Total,
            descending: true,
            filter: None,
            editing: None,
            offset: 0,
        }
    }
}

/// What a key asks of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Redraw,
    Quit,
}

/// Applies one key. `rows` is the number of rows the filter lets through
/// and `page` how many fit on the screen (for scrolling).
pub fn handle_key(ui: &mut Ui, key: KeyEvent, rows: usize, page: usize) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Nothing;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
        return Action::Quit;
    }
    if let Some(text) = &mut ui.editing {
        match key.code {
            KeyCode::Enter => {
                let text = std::mem::take(text);
                ui.filter = (!text.is_empty()).then_some(text);
                ui.editing = None;
                ui.offset = 0;
            }
            KeyCode::Esc => {
                ui.editing = None;
                ui.filter = None;
                ui.offset = 0;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) if !ctrl && !c.is_control() => text.push(c),
            _ => return Action::Nothing,
        }
        return Action::Redraw;
    }
    let last = rows.saturating_sub(page.max(1));
    match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') => return Action::Quit,
        KeyCode::Char('/') => ui.editing = Some(ui.filter.clone().unwrap_or_default()),
        KeyCode::Esc => {
            ui.filter = None;
            ui.offset = 0;
        }
        KeyCode::Char('s') | KeyCode::Char('>') | KeyCode::Right => {
            ui.sort = ui.sort.next();
            ui.descending = ui.sort.default_descending();
        }
        KeyCode::Char('S') | KeyCode::Char('<') | KeyCode::Left => {
            ui.sort = ui.sort.prev();
            ui.descending = ui.sort.default_descending();
        }
        KeyCode::Char('r') => ui.descending = !ui.descending,
        KeyCode::Down | KeyCode::Char('j') => ui.offset = (ui.offset + 1).min(last),
        KeyCode::Up | KeyCode::Char('k') => ui.offset = ui.offset.saturating_sub(1),
        KeyCode::PageDown | KeyCode::Char(' ') => ui.offset = (ui.offset + page).min(last),
        KeyCode::PageUp => ui.offset = ui.offset.saturating_sub(page),
        KeyCode::Home | KeyCode::Char('g') => ui.offset = 0,
        KeyCode::End | KeyCode::Char('G') => ui.offset = last,
        _ => return Action::Nothing,
    }
    Action::Redraw
}

/// Everything one frame shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopState {
    pub rows: Vec<ProcessRow>,
    /// Sockets per state on the host (all processes, TIME_WAIT included).
    pub totals: BTreeMap<TcpState, usize>,
    /// Transitions per second over the last interval.
    pub transitions_per_s: f64,
    pub opens_per_s: f64,
    pub closes_per_s: f64,
    /// Transitions the kernel could not deliver, since the start.
    pub lost: u64,
    /// CLOSE_WAIT suspects of processes, and never-accepted ones waiting in
    /// listeners' accept queues.
    pub suspects: usize,
    pub backlog_suspects: usize,
    pub threshold_s: u64,
    /// The latest message tcpstate printed (a warning), if any.
    pub message: Option<String>,
    pub ui: Ui,
}

/// States in the header, in the order of a connection's life.
const HEADER_STATES: [(TcpState, &str); 10] = [
    (TcpState::Established, "ESTAB"),
    (TcpState::SynSent, "SYN_SENT"),
    (TcpState::SynRecv, "SYN_RECV"),
    (TcpState::FinWait1, "FIN_WAIT1"),
    (TcpState::FinWait2, "FIN_WAIT2"),
    (TcpState::Closing, "CLOSING"),
    (TcpState::TimeWait, "TIME_WAIT"),
    (TcpState::CloseWait, "CLOSE_WAIT"),
    (TcpState::LastAck, "LAST_ACK"),
    (TcpState::Listen, "LISTEN"),
];

/// The header's lines; a narrow screen wraps them.
const HEADER_LINES: u16 = 3;
const FOOTER_LINES: u16 = 1;

/// The header, the table and the footer.
fn areas(state: &TopState, shown: usize, area: Rect) -> [Rect; 3] {
    let width = usize::from(area.width.max(1));
    let wrapped: usize = header(state, shown)
        .iter()
        .map(|line| line.width().div_ceil(width).max(1))
        .sum();
    let head = u16::try_from(wrapped).unwrap_or(u16::MAX).max(HEADER_LINES);
    Layout::vertical([
        Constraint::Length(head),
        Constraint::Min(0),
        Constraint::Length(FOOTER_LINES),
    ])
    .areas(area)
}

/// How many process rows fit in `area`.
pub fn page_size(state: &TopState, area: Rect) -> usize {
    let [_, body, _] = areas(state, state.visible_rows().len(), area);
    usize::from(body.height.saturating_sub(1))
}

impl TopState {
    /// The rows the filter lets through, in the chosen order.
    pub fn visible_rows(&self) -> Vec<&ProcessRow> {
        let mut rows: Vec<&ProcessRow> = self
            .rows
            .iter()
            .filter(|r| self.ui.filter.as_deref().is_none_or(|f| r.matches(f)))
            .collect();
        let column = self.ui.sort;
        rows.sort_by(|a, b| {
            let order = match column {
                Column::Comm => a.comm.cmp(&b.comm),
                _ => a
                    .number(column)
                    .partial_cmp(&b.number(column))
                    .unwrap_or(Ordering::Equal),
            };
            let order = if self.ui.descending {
                order.reverse()
            } else {
                order
            };
            order.then(a.tgid.cmp(&b.tgid))
        });
        rows
    }
}

fn total_sockets(totals: &BTreeMap<TcpState, usize>) -> usize {
    totals.values().sum()
}

fn header(state: &TopState, shown: usize) -> Vec<Line<'static>> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut first = vec![
        Span::styled("tcpstate top", bold),
        Span::raw(format!("  {} sockets:", total_sockets(&state.totals))),
    ];
    for (s, name) in HEADER_STATES {
        let n = state.totals.get(&s).copied().unwrap_or(0);
        first.push(Span::raw(format!(" {name} ")));
        first.push(Span::styled(n.to_string(), bold));
    }
    let lost_style = if state.lost > 0 {
        bold.add_modifier(Modifier::REVERSED)
    } else {
        bold
    };
    let second = vec![
        Span::raw("transitions "),
        Span::styled(format!("{:.1}/s", state.transitions_per_s), bold),
        Span::raw("  opened "),
        Span::styled(format!("{:.1}/s", state.opens_per_s), bold),
        Span::raw("  closed "),
        Span::styled(format!("{:.1}/s", state.closes_per_s), bold),
        Span::raw("  lost events "),
        Span::styled(state.lost.to_string(), lost_style),
        Span::raw(format!("  CLOSE_WAIT suspects (>{}s) ", state.threshold_s)),
        Span::styled(state.suspects.to_string(), bold),
        Span::raw(format!(" (+{} never accepted)", state.backlog_suspects)),
    ];
    let direction = if state.ui.descending {
        "descending"
    } else {
        "ascending"
    };
    let mut third = vec![
        Span::raw("sort: "),
        Span::styled(format!("{} {direction}", state.ui.sort.title()), bold),
        Span::raw("  filter: "),
    ];
    match &state.ui.filter {
        Some(f) => third.push(Span::styled(f.clone(), bold)),
        None => third.push(Span::raw("none")),
    }
    third.push(Span::raw(format!(
        "  processes: {shown} of {}",
        state.rows.len()
    )));
    vec![Line::from(first), Line::from(second), Line::from(third)]
}

fn footer(state: &TopState) -> Line<'static> {
    if let Some(text) = &state.ui.editing {
        return Line::from(vec![
            Span::styled(
                format!("filter: {text}_"),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw("   (command name or pid; Enter apply, Esc clear)"),
        ]);
    }
    let mut spans = vec![Span::raw(
        "q quit  s/S sort column  r reverse  / filter  Esc clear filter  Up/Down/PgUp/PgDn scroll",
    )];
    if let Some(message) = &state.message {
        spans.push(Span::styled(
            format!("   {message}"),
            Style::default().add_modifier(Modifier::DIM),
        ));
    }
    Line::from(spans)
}

/// The columns that fit in `width`, in display order: the least telling
/// ones are left out of a narrow screen, but never the sort column.
pub fn columns_for(width: u16, sort: Column) -> Vec<Column> {
    let mut columns = Column::ALL.to_vec();
    let needed =
        |columns: &[Column]| -> u16 { columns.iter().map(|c| c.width() + 1).sum::<u16>() - 1 };
    for drop in Column::DROPPED_FIRST {
        if needed(&columns) <= width {
            break;
        }
        if drop != sort {
            columns.retain(|&c| c != drop);
        }
    }
    columns
}

/// Draws one frame of `state` into `area` of `buf`.
pub fn render(state: &TopState, area: Rect, buf: &mut Buffer) {
    let rows = state.visible_rows();
    let [head, body, foot] = areas(state, rows.len(), area);
    Paragraph::new(header(state, rows.len()))
        .wrap(Wrap { trim: false })
        .render(head, buf);
    Paragraph::new(footer(state)).render(foot, buf);

    let page = usize::from(body.height.saturating_sub(1));
    let offset = state.ui.offset.min(rows.len().saturating_sub(page.max(1)));
    let arrow = if state.ui.descending { "▼" } else { "▲" };
    let columns = columns_for(body.width, state.ui.sort);
    let titles = columns.iter().map(|&c| {
        let selected = c == state.ui.sort;
        let text = if selected {
            format!("{}{arrow}", c.title())
        } else {
            c.title().to_string()
        };
        let style = if selected {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        Cell::from(aligned(text, c)).style(style)
    });
    let lines = rows.iter().skip(offset).take(page).map(|row| {
        let style = if row.suspects > 0 {
            Style::default().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        Row::new(columns.iter().map(|&c| Cell::from(aligned(row.cell(c), c)))).style(style)
    });
    let widths = columns.iter().map(|c| Constraint::Length(c.width()));
    Table::new(lines, widths)
        .header(Row::new(titles))
        .column_spacing(1)
        .render(body, buf);
}

fn aligned(text: String, column: Column) -> Line<'static> {
    let alignment = match column {
        Column::Comm => Alignment::Left,
        _ => Alignment::Right,
    };
    Line::from(text).alignment(alignment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{OwnerLeak, ProcessStates},
        wire::Comm,
    };
    use ratatui::{backend::TestBackend, Terminal};

    fn process(tgid: Option<u32>, comm: &str, states: &[(TcpState, usize)]) -> ProcessStates {
        ProcessStates {
            tgid,
            comm: tgid.map(|_| Comm::from_str_lossy(comm)),
            states: states.iter().copied().collect(),
            cgroup_id: 0,
        }
    }

    fn sample() -> TopState {
        use TcpState::*;
        let counts = StateCounts {
            by_state: [
                (Established, 7),
                (CloseWait, 37),
                (TimeWait, 1069),
                (Listen, 3),
            ]
            .into_iter()
            .collect(),
            by_process: vec![
                process(None, "", &[(TimeWait, 1060), (Listen, 1)]),
                process(Some(4242), "nginx", &[(Established, 5), (Listen, 1)]),
                process(
                    Some(777),
                    "leaky",
                    &[(CloseWait, 37), (Listen, 1), (TimeWait, 9)],
                ),
                process(Some(31337), "curl", &[(Established, 2)]),
            ],
            ..StateCounts::default()
        };
        let leaks = LeakReport {
            threshold_ns: 30_000_000_000,
            by_owner: vec![OwnerLeak {
                tgid: Some(777),
                comm: Some(Comm::from_str_lossy("leaky")),
                count: 30,
                oldest_age_ns: 40_000_000_000,
                age_is_lower_bound: false,
                local_ports: vec![9100],
                remote_peers: vec![],
                cgroup_id: 0,
            }],
            accept_backlog: vec![],
        };
        let rates: BTreeMap<Option<u32>, Rates> = [
            (
                Some(4242),
                Rates {
                    comm: Some("nginx".into()),
                    open_per_s: 12.0,
                    close_per_s: 9.5,
                },
            ),
            // Gone already: a row from its rates alone.
            (
                Some(555),
                Rates {
                    comm: Some("wget".into()),
                    open_per_s: 2.0,
                    close_per_s: 2.0,
                },
            ),
        ]
        .into_iter()
        .collect();
        TopState {
            rows: build_rows(&counts, &leaks, &rates, &mut |_| None),
            totals: counts.by_state.clone(),
            transitions_per_s: 123.4,
            opens_per_s: 14.0,
            closes_per_s: 13.5,
            lost: 17,
            suspects: 30,
            backlog_suspects: 2,
            threshold_s: 30,
            message: None,
            ui: Ui::default(),
        }
    }

    fn screen(state: &TopState, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|frame| render(state, frame.area(), frame.buffer_mut()))
            .unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    /// The screen line showing `pid` in the PID column.
    fn row_of<'a>(lines: &'a [String], pid: &str) -> Option<(usize, &'a str)> {
        lines
            .iter()
            .enumerate()
            .skip(HEADER_LINES as usize + 1)
            .find(|(_, l)| l.split_whitespace().next() == Some(pid))
            .map(|(i, l)| (i, l.as_str()))
    }

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn rows_merge_states_leaks_and_rates() {
        let state = sample();
        let leaky = state.rows.iter().find(|r| r.tgid == Some(777)).unwrap();
        assert_eq!(leaky.comm, "leaky");
        assert_eq!(leaky.count(TcpState::CloseWait), 37);
        assert_eq!(leaky.count(TcpState::TimeWait), 9);
        assert_eq!(leaky.suspects, 30);
        assert_eq!(leaky.total(), 47);
        let unknown = state.rows.iter().find(|r| r.tgid.is_none()).unwrap();
        assert_eq!(unknown.comm, UNKNOWN_OWNER);
        let gone = state.rows.iter().find(|r| r.tgid == Some(555)).unwrap();
        assert_eq!((gone.comm.as_str(), gone.total()), ("wget", 0));
        assert_eq!(gone.open_per_s, 2.0);
        assert_eq!(state.rows.len(), 5);
    }

    #[test]
    fn processes_in_a_pod_show_and_match_it() {
        let mut in_pod = process(Some(300), "api", &[(TcpState::Established, 2)]);
        in_pod.cgroup_id = 77;
        let counts = StateCounts {
            by_process: vec![in_pod, process(Some(400), "sshd", &[(TcpState::Listen, 1)])],
            ..StateCounts::default()
        };
        let rows = build_rows(
            &counts,
            &LeakReport::default(),
            &BTreeMap::new(),
            &mut |cgroup| {
                (cgroup == 77).then(|| crate::source::kubernetes::Pod {
                    namespace: "payments".into(),
                    name: "api-0".into(),
                })
            },
        );
        let api = rows.iter().find(|r| r.tgid == Some(300)).unwrap();
        assert_eq!(api.pod.as_deref(), Some("payments/api-0"));
        assert_eq!(api.cell(Column::Comm), "api [payments/api-0]");
        assert!(api.matches("PAYMENTS"));
        let sshd = rows.iter().find(|r| r.tgid == Some(400)).unwrap();
        assert_eq!(
            (sshd.pod.as_deref(), sshd.cell(Column::Comm).as_str()),
            (None, "sshd")
        );
        assert!(!sshd.matches("payments"));
    }

    #[test]
    fn header_shows_totals_rates_lost_and_sort() {
        let lines = screen(&sample(), 160, 20);
        assert!(lines[0].contains("1116 sockets:"), "{}", lines[0]);
        assert!(lines[0].contains("ESTAB 7"), "{}", lines[0]);
        assert!(lines[0].contains("CLOSE_WAIT 37"), "{}", lines[0]);
        assert!(lines[0].contains("TIME_WAIT 1069"), "{}", lines[0]);
        assert!(lines[0].contains("SYN_SENT 0"), "{}", lines[0]);
        assert!(lines[1].contains("transitions 123.4/s"), "{}", lines[1]);
        assert!(lines[1].contains("opened 14.0/s"), "{}", lines[1]);
        assert!(lines[1].contains("lost events 17"), "{}", lines[1]);
        assert!(
            lines[1].contains("CLOSE_WAIT suspects (>30s) 30 (+2 never accepted)"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("sort: TOTAL descending"), "{}", lines[2]);
        assert!(lines[2].contains("filter: none"), "{}", lines[2]);
        assert!(lines[2].contains("processes: 5 of 5"), "{}", lines[2]);
        // The table header marks the sort column.
        assert!(lines[3].contains("TOTAL▼"), "{}", lines[3]);
        assert!(lines[3].contains("CLOSE_WAIT"), "{}", lines[3]);
    }

    #[test]
    fn a_process_row_shows_its_counts_in_their_columns() {
        let lines = screen(&sample(), 160, 20);
        let (_, leaky) = row_of(&lines, "777").expect("leaky's row");
        let fields: Vec<&str> = leaky.split_whitespace().collect();
        // PID COMM TOTAL ESTAB SYN_SENT SYN_RECV FIN_WAIT* CLOSING TIME_WAIT
        // CLOSE_WAIT LAST_ACK LISTEN CW_LEAK OPEN/s CLOSE/s
        assert_eq!(
            fields,
            ["777", "leaky", "47", "-", "-", "-", "-", "-", "9", "37", "-", "1", "30", "-", "-"]
        );
        let (_, nginx) = row_of(&lines, "4242").expect("nginx's row");
        let fields: Vec<&str> = nginx.split_whitespace().collect();
        assert_eq!(fields[fields.len() - 2..], ["12", "9.5"], "{nginx:?}");
        let (_, unknown) = row_of(&lines, "?").expect("unknown owners' row");
        assert!(unknown.contains(UNKNOWN_OWNER), "{unknown}");
        // Most sockets first: unknown (1061), leaky (47), nginx (6).
        let order: Vec<usize> = ["?", "777", "4242", "31337", "555"]
            .iter()
            .map(|pid| row_of(&lines, pid).unwrap().0)
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }

    #[test]
    fn sort_keys_cycle_columns_and_reverse() {
        let mut state = sample();
        let mut ui = state.ui.clone();
        // s: TOTAL -> ESTAB -> ... -> CLOSE_WAIT.
        for _ in 0..7 {
            assert_eq!(
                handle_key(&mut ui, press(KeyCode::Char('s')), 5, 10),
                Action::Redraw
            );
        }
        assert_eq!(ui.sort, Column::CloseWait);
        state.ui = ui.clone();
        let lines = screen(&state, 160, 20);
        assert!(
            lines[2].contains("sort: CLOSE_WAIT descending"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("CLOSE_WAIT▼"), "{}", lines[3]);
        assert_eq!(row_of(&lines, "777").unwrap().0, HEADER_LINES as usize + 1);

        handle_key(&mut ui, press(KeyCode::Char('r')), 5, 10);
        state.ui = ui.clone();
        let lines = screen(&state, 160, 20);
        assert!(
            lines[2].contains("sort: CLOSE_WAIT ascending"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("CLOSE_WAIT▲"), "{}", lines[3]);
        assert_eq!(row_of(&lines, "777").unwrap().0, HEADER_LINES as usize + 5);

        // S goes back; names sort A to Z by default.
        for _ in 0..8 {
            handle_key(&mut ui, press(KeyCode::Char('S')), 5, 10);
        }
        assert_eq!((ui.sort, ui.descending), (Column::Comm, false));
        handle_key(&mut ui, press(KeyCode::Char('S')), 5, 10);
        handle_key(&mut ui, press(KeyCode::Char('S')), 5, 10);
        assert_eq!(ui.sort, Column::CloseRate, "wraps around");
    }

    #[test]
    fn filter_is_typed_applied_and_cleared() {
        let mut state = sample();
        let mut ui = state.ui.clone();
        handle_key(&mut ui, press(KeyCode::Char('/')), 5, 10);
        for c in "NGI".chars() {
            handle_key(&mut ui, press(KeyCode::Char(c)), 5, 10);
        }
        handle_key(&mut ui, press(KeyCode::Char('x')), 5, 10);
        handle_key(&mut ui, press(KeyCode::Backspace), 5, 10);
        // Typing, not applied yet: the footer shows it.
        state.ui = ui.clone();
        let lines = screen(&state, 160, 20);
        assert!(lines[19].starts_with("filter: NGI_"), "{}", lines[19]);
        assert!(lines[2].contains("filter: none"), "{}", lines[2]);
        assert!(row_of(&lines, "777").is_some());
        // `q` is text while typing.
        assert_eq!(
            handle_key(&mut ui, press(KeyCode::Char('q')), 5, 10),
            Action::Redraw
        );
        handle_key(&mut ui, press(KeyCode::Backspace), 5, 10);

        handle_key(&mut ui, press(KeyCode::Enter), 5, 10);
        state.ui = ui.clone();
        let lines = screen(&state, 160, 20);
        assert!(lines[2].contains("filter: NGI"), "{}", lines[2]);
        assert!(lines[2].contains("processes: 1 of 5"), "{}", lines[2]);
        assert!(row_of(&lines, "4242").is_some());
        assert!(row_of(&lines, "777").is_none());
        assert!(lines[19].starts_with("q quit"), "{}", lines[19]);

        // By pid.
        ui.filter = Some("313".into());
        state.ui = ui.clone();
        assert_eq!(state.visible_rows().len(), 1);
        assert_eq!(state.visible_rows()[0].comm, "curl");

        handle_key(&mut ui, press(KeyCode::Esc), 5, 10);
        assert_eq!(ui.filter, None);
        // Esc while typing clears too.
        handle_key(&mut ui, press(KeyCode::Char('/')), 5, 10);
        handle_key(&mut ui, press(KeyCode::Char('a')), 5, 10);
        handle_key(&mut ui, press(KeyCode::Esc), 5, 10);
        assert_eq!((ui.filter.clone(), ui.editing.clone()), (None, None));
    }

    #[test]
    fn quit_keys_and_scrolling() {
        let mut ui = Ui::default();
        assert_eq!(
            handle_key(&mut ui, press(KeyCode::Char('q')), 5, 10),
            Action::Quit
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(handle_key(&mut ui, ctrl_c, 5, 10), Action::Quit);
        ui.editing = Some("x".into());
        assert_eq!(handle_key(&mut ui, ctrl_c, 5, 10), Action::Quit);
        assert_eq!(
            handle_key(&mut ui, press(KeyCode::F(5)), 5, 10),
            Action::Nothing
        );

        let mut ui = Ui::default();
        handle_key(&mut ui, press(KeyCode::PageDown), 30, 10);
        assert_eq!(ui.offset, 10);
        handle_key(&mut ui, press(KeyCode::End), 30, 10);
        assert_eq!(ui.offset, 20);
        handle_key(&mut ui, press(KeyCode::Down), 30, 10);
        assert_eq!(ui.offset, 20);
        handle_key(&mut ui, press(KeyCode::Up), 30, 10);
        assert_eq!(ui.offset, 19);
        handle_key(&mut ui, press(KeyCode::Home), 30, 10);
        assert_eq!(ui.offset, 0);
    }

    #[test]
    fn narrow_screens_wrap_the_header() {
        let state = sample();
        let lines = screen(&state, 80, 16);
        let header = lines[..6].join(" ");
        for total in [
            "ESTAB 7",
            "TIME_WAIT 1069",
            "CLOSE_WAIT 37",
            "LISTEN 3",
            "lost events 17",
        ] {
            assert!(header.contains(total), "{total}: {lines:#?}");
        }
        assert!(
            lines.iter().any(|l| l.contains("sort: TOTAL descending")),
            "{lines:#?}"
        );
        assert!(lines.iter().any(|l| l.contains("TOTAL▼")), "{lines:#?}");
        assert!(row_of_anywhere(&lines, "777"), "{lines:#?}");
    }

    fn row_of_anywhere(lines: &[String], pid: &str) -> bool {
        lines
            .iter()
            .any(|l| l.split_whitespace().next() == Some(pid))
    }

    #[test]
    fn narrow_screens_leave_out_the_least_telling_columns() {
        assert_eq!(columns_for(160, Column::Total), Column::ALL.to_vec());
        let narrow = columns_for(80, Column::Total);
        assert_eq!(
            narrow,
            [
                Column::Pid,
                Column::Comm,
                Column::Total,
                Column::Established,
                Column::TimeWait,
                Column::CloseWait,
                Column::Suspects,
                Column::OpenRate,
            ]
        );
        // Never the sort column.
        assert!(columns_for(80, Column::Closing).contains(&Column::Closing));
        let mut state = sample();
        state.ui.sort = Column::CloseWait;
        let lines = screen(&state, 80, 12);
        let titles = lines
            .iter()
            .find(|l| l.trim_start().starts_with("PID"))
            .expect("the table's titles");
        assert_eq!(
            titles.split_whitespace().collect::<Vec<_>>(),
            [
                "PID",
                "COMM",
                "TOTAL",
                "ESTAB",
                "TIME_WAIT",
                "CLOSE_WAIT▼",
                "CW_LEAK",
                "OPEN/s"
            ]
        );
        let (_, leaky) = row_of(&lines, "777").unwrap();
        assert_eq!(
            leaky.split_whitespace().collect::<Vec<_>>(),
            ["777", "leaky", "47", "-", "9", "37", "30", "-"]
        );
    }

    #[test]
    fn small_screens_do_not_panic_and_scroll_shows_later_rows() {
        let mut state = sample();
        for (w, h) in [(0, 0), (1, 1), (20, 3), (80, 6), (40, 24)] {
            screen(&state, w, h);
        }
        // 2 rows fit on a 7-line screen; scrolled by 3 of 5, rows 4 and 5.
        assert_eq!(page_size(&state, Rect::new(0, 0, 160, 7)), 2);
        state.ui.offset = 3;
        let lines = screen(&state, 160, 7);
        assert!(row_of(&lines, "31337").is_some(), "{lines:#?}");
        assert!(row_of(&lines, "555").is_some(), "{lines:#?}");
        // An offset past the end is clamped.
        state.ui.offset = 99;
        let lines = screen(&state, 160, 7);
        assert!(row_of(&lines, "555").is_some(), "{lines:#?}");
    }
}
