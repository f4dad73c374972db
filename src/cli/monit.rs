//! `opm monit`: a dashboard in the terminal. It polls `GET /daemon/list`
//! once a second (of this machine's daemon, or of `--server`, an agent
//! through a server included), keeps a small ring of samples per process
//! for the CPU and memory sparklines, follows the selected process's logs
//! over the live log stream that `opm logs --follow` reads, and carries out
//! the keys r/s/S with `send_action`, the request of `opm restart/stop/start`.
//!
//! The decisions are pure functions with unit tests: the rings (`History`),
//! which columns fit a width (`columns`), how the height is shared
//! (`heights`), what a key means (`input`), where the selection goes
//! (`Selection`). Drawing (`draw`) only lays those out. The terminal is
//! given back on every way out: a quit key, Ctrl-C (a key in raw mode),
//! SIGTERM/SIGHUP/SIGINT, an error, and a panic (a hook).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::{Frame, Terminal};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::daemon::target;
use super::format;
use super::process::send_action;
use super::{CliError, Remote};
use crate::client::{Client, SseReader};
use crate::model::{ActionKind, ActionResponse, ProcessView, Status, Target};

#[derive(Debug, Args)]
pub struct MonitArgs {
    #[command(flatten)]
    pub remote: Remote,
}

/// How often the process list is polled: one sample per process each time.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a poll or an action may take before it is reported as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples kept per process: five minutes at one a second.
pub const HISTORY_SAMPLES: usize = 300;

/// Lines of each log shown at once when a process is selected.
const LOG_TAIL: usize = 50;

/// Lines of log kept for the selected process.
const LOG_KEEP: usize = 500;

/// How long after a log stream ended it is opened again.
const LOG_RETRY: Duration = Duration::from_secs(2);

/// How long the outcome of an action stays on the help line.
const SAID_FOR: Duration = Duration::from_secs(5);

/// With the `failpoints` feature (the tests' build), monit panics on the
/// first key when this variable is set: the tests check that a panic gives
/// the terminal back.
#[cfg(feature = "failpoints")]
pub const PANIC_ON_KEY: &str = "OPM_TEST_MONIT_PANIC";

/// Messages from the background tasks to the screen.
const CHANNEL: usize = 1024;

// ---------------------------------------------------------------- the rings

/// One look at a process: what its sparklines are drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix time in ms.
    pub at_ms: u64,
    /// Percent of one core.
    pub cpu: f32,
    /// Bytes of the whole process group.
    pub memory: u64,
}

impl Sample {
    pub fn of(v: &ProcessView, at_ms: u64) -> Sample {
        Sample {
            at_ms,
            cpu: v.cpu,
            memory: v.memory,
        }
    }
}

/// The newest samples of each process, oldest first, at most `cap` each.
///
/// Monit adds one sample per process a poll (`record`); `add` takes samples
/// in any order and puts each at its place in time, so the past can be
/// filled in from a list of samples (a daemon's history) at any moment
/// without disturbing what was polled.
#[derive(Debug)]
pub struct History {
    cap: usize,
    rings: HashMap<u64, VecDeque<Sample>>,
}

impl History {
    pub fn new(cap: usize) -> History {
        History {
            cap: cap.max(1),
            rings: HashMap::new(),
        }
    }

    /// Adds samples of process `id`: each at its place by time; a sample at
    /// a time already held is dropped; only the newest `cap` stay.
    pub fn add(&mut self, id: u64, samples: impl IntoIterator<Item = Sample>) {
        let ring = self.rings.entry(id).or_default();
        for s in samples {
            match ring.back() {
                Some(last) if s.at_ms <= last.at_ms => {
                    if let Err(i) = ring.binary_search_by_key(&s.at_ms, |x| x.at_ms) {
                        ring.insert(i, s);
                    }
                }
                _ => ring.push_back(s),
            }
            while ring.len() > self.cap {
                ring.pop_front();
            }
        }
    }

    /// One poll: a sample of every listed process. The rings of processes
    /// no longer listed are dropped.
    pub fn record(&mut self, views: &[ProcessView], at_ms: u64) {
        let listed: HashSet<u64> = views.iter().map(|v| v.id).collect();
        self.rings.retain(|id, _| listed.contains(id));
        for v in views {
            self.add(v.id, [Sample::of(v, at_ms)]);
        }
    }

    /// The newest `n` samples of `id`, oldest first.
    pub fn last(&self, id: u64, n: usize) -> Vec<Sample> {
        let Some(ring) = self.rings.get(&id) else {
            return Vec::new();
        };
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .copied()
            .collect()
    }
}

/// The top of a CPU scale: 100% of one core, or the peak when higher.
pub fn cpu_scale(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .map(|s| f64::from(s.cpu))
        .fold(100.0, f64::max)
}

/// The top of a memory scale: the peak of the samples (at least 1 byte).
pub fn memory_scale(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.memory).max().unwrap_or(0).max(1)
}

const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` as a sparkline of `width` cells, the newest on the right:
/// older values beyond the width are cut, missing ones are blank. Each bar
/// is 0 to 8 eighths of `max`; any value above 0 shows at least ▁.
pub fn spark(values: &[f64], max: f64, width: usize) -> String {
    let shown = &values[values.len().saturating_sub(width)..];
    let mut out = " ".repeat(width - shown.len());
    for &v in shown {
        let level = if v <= 0.0 || max <= 0.0 {
            0
        } else {
            ((v / max * 8.0).round() as usize).clamp(1, 8)
        };
        out.push(BARS[level]);
    }
    out
}

// ------------------------------------------------------------- the layout

/// A column of the process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Name,
    Id,
    Status,
    Pid,
    Cpu,
    Memory,
    Restarts,
    Uptime,
    CpuTrend,
    MemoryTrend,
}

impl Column {
    /// Left to right.
    pub const ALL: [Column; 10] = [
        Column::Name,
        Column::Id,
        Column::Status,
        Column::Pid,
        Column::Cpu,
        Column::Memory,
        Column::Restarts,
        Column::Uptime,
        Column::CpuTrend,
        Column::MemoryTrend,
    ];

    /// What goes first when the terminal is narrow; name, status, CPU and
    /// memory always stay.
    pub const DROP_ORDER: [Column; 6] = [
        Column::Pid,
        Column::Uptime,
        Column::Restarts,
        Column::Id,
        Column::CpuTrend,
        Column::MemoryTrend,
    ];

    pub fn header(self) -> &'static str {
        match self {
            Column::Name => "name",
            Column::Id => "id",
            Column::Status => "status",
            Column::Pid => "pid",
            Column::Cpu => "cpu",
            Column::Memory => "memory",
            Column::Restarts => "↺",
            Column::Uptime => "uptime",
            Column::CpuTrend => "cpu ~",
            Column::MemoryTrend => "mem ~",
        }
    }

    /// The narrowest it is shown.
    pub fn min_width(self) -> u16 {
        match self {
            Column::Name => 10,
            Column::Id => 4,
            Column::Status => 8,
            Column::Pid => 7,
            Column::Cpu => 6,
            Column::Memory => 7,
            Column::Restarts => 3,
            Column::Uptime => 7,
            Column::CpuTrend | Column::MemoryTrend => 8,
        }
    }
}

/// The selection mark's cells before the first column.
const MARK: &str = ">";

/// The widest a name or a trend column grows.
const NAME_MAX: u16 = 32;
const TREND_MAX: u16 = 40;

/// The columns that fit in `width` cells, each with its width, left to
/// right. Columns go in `Column::DROP_ORDER` until the rest fit; what is
/// left over widens the name up to `name_len` (its longest), then the trends.
pub fn columns(width: u16, name_len: u16) -> Vec<(Column, u16)> {
    fn need(cols: &[Column]) -> u16 {
        let gaps = cols.len().saturating_sub(1) as u16;
        MARK.len() as u16 + gaps + cols.iter().map(|c| c.min_width()).sum::<u16>()
    }
    let mut cols = Column::ALL.to_vec();
    for drop in Column::DROP_ORDER {
        if need(&cols) <= width {
            break;
        }
        cols.retain(|c| *c != drop);
    }
    let mut spare = width.saturating_sub(need(&cols));
    let mut out: Vec<(Column, u16)> = cols.iter().map(|c| (*c, c.min_width())).collect();
    for (c, w) in &mut out {
        if *c == Column::Name {
            let grow = name_len.min(NAME_MAX).saturating_sub(*w).min(spare);
            *w += grow;
            spare -= grow;
        }
    }
    let trends = out
        .iter()
        .filter(|(c, _)| matches!(c, Column::CpuTrend | Column::MemoryTrend))
        .count() as u16;
    let each = spare.checked_div(trends).unwrap_or(0);
    for (c, w) in &mut out {
        if matches!(c, Column::CpuTrend | Column::MemoryTrend) {
            *w += each.min(TREND_MAX - *w);
        }
    }
    out
}

/// Rows of the parts between the title line and the help line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heights {
    pub table: u16,
    pub charts: u16,
    pub logs: u16,
}

/// The charts of the selected process: 3 rows of bars in a border.
const CHARTS_HEIGHT: u16 = 5;
/// The least the log gets: 4 lines in a border.
const LOG_MIN: u16 = 6;
/// The least the table gets: its header and two rows.
const TABLE_MIN: u16 = 3;

/// How `body` rows are shared: the table gets its header and a row per
/// process, as far as that leaves the log its minimum; the charts come
/// when there is room for all three; the log takes the rest. A terminal
/// too low for a log shows the table only.
pub fn heights(body: u16, processes: usize) -> Heights {
    if body < TABLE_MIN + LOG_MIN {
        return Heights {
            table: body,
            charts: 0,
            logs: 0,
        };
    }
    let charts = if body >= TABLE_MIN + CHARTS_HEIGHT + LOG_MIN {
        CHARTS_HEIGHT
    } else {
        0
    };
    // The header and a row per process (one row says "no processes").
    let wanted = u16::try_from(processes.max(1))
        .unwrap_or(u16::MAX)
        .saturating_add(1);
    let table = wanted.min(body - charts - LOG_MIN);
    Heights {
        table,
        charts,
        logs: body - charts - table,
    }
}

// ------------------------------------------------------------ keys, selection

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Up,
    Down,
    First,
    Last,
    Act(ActionKind),
    Quit,
}

/// The keys, as the help line shows them.
pub const HELP: &str = "↑↓/jk select  r restart  s stop  S start  q quit";

/// What a key means: ↑↓ (or k/j) move, Home/End (or g/G) jump, `r`
/// restarts, `s` stops, `S` starts, `q`, Esc and Ctrl-C quit. Other keys,
/// and letters with Ctrl or Alt, mean nothing.
pub fn input(key: KeyEvent) -> Option<Input> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    match key.code {
        KeyCode::Char('c') if ctrl => Some(Input::Quit),
        KeyCode::Char(_) if ctrl || alt => None,
        KeyCode::Char('q') | KeyCode::Esc => Some(Input::Quit),
        KeyCode::Up | KeyCode::Char('k') => Some(Input::Up),
        KeyCode::Down | KeyCode::Char('j') => Some(Input::Down),
        KeyCode::Home | KeyCode::Char('g') => Some(Input::First),
        KeyCode::End | KeyCode::Char('G') => Some(Input::Last),
        // A held key repeats moves, never actions.
        _ if key.kind == KeyEventKind::Repeat => None,
        KeyCode::Char('r') => Some(Input::Act(ActionKind::Restart)),
        KeyCode::Char('s') => Some(Input::Act(ActionKind::Stop)),
        KeyCode::Char('S') => Some(Input::Act(ActionKind::Start)),
        _ => None,
    }
}

/// The selected process: followed by id across refreshes (the list may
/// change order or lose rows), by place when it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    id: Option<u64>,
    index: usize,
}

impl Selection {
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    pub fn index(&self) -> Option<usize> {
        self.id.map(|_| self.index)
    }

    /// After a new list: the same process if it is still there, else the
    /// one now at its place (or the last), or none in an empty list.
    pub fn refresh(&mut self, views: &[ProcessView]) {
        if let Some(i) = self.id.and_then(|id| views.iter().position(|v| v.id == id)) {
            self.index = i;
            return;
        }
        if views.is_empty() {
            *self = Selection::default();
            return;
        }
        self.index = self.index.min(views.len() - 1);
        self.id = Some(views[self.index].id);
    }

    /// Moves as `input` says (other inputs do nothing), within the list.
    pub fn step(&mut self, views: &[ProcessView], input: Input) {
        if views.is_empty() {
            return;
        }
        let last = views.len() - 1;
        let at = self.index().unwrap_or(0).min(last);
        self.index = match input {
            Input::Up => at.saturating_sub(1),
            Input::Down => (at + 1).min(last),
            Input::First => 0,
            Input::Last => last,
            Input::Act(_) | Input::Quit => at,
        };
        self.id = Some(views[self.index].id);
    }
}

/// What the title line says after an action, as `opm restart` says it:
/// ✔ when the process reached the state asked for, … while on its way,
/// ✘ with the reason when it failed.
pub fn outcome(
    action: ActionKind,
    name: &str,
    id: u64,
    result: &Result<ActionResponse, String>,
) -> String {
    let r = match result {
        Ok(r) => r,
        Err(e) => return format!("✘ {} {name} (id {id}): {e}", action.as_str()),
    };
    let Some(v) = r.processes.iter().find(|v| v.id == id) else {
        return format!("✔ {} {name} (id {id})", action.as_str());
    };
    let done = match action {
        ActionKind::Stop => v.status == Status::Stopped,
        _ => v.status == Status::Online,
    };
    match &v.error {
        Some(e) if !done && action != ActionKind::Stop => {
            format!("✘ {} {name} (id {id}): {e}", action.as_str())
        }
        _ => format!(
            "{} {} {name} (id {id}): {}",
            if done { "✔" } else { "…" },
            action.as_str(),
            v.status.as_str()
        ),
    }
}

/// A log line made safe to draw: tabs become spaces, colour and cursor
/// sequences (CSI) are dropped, other control characters are shown escaped.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => out.push_str("    "),
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                // Parameters and intermediates up to the final byte @..~.
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to `width` characters, with … when something was cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `512B`, `1.5K`, `12.3M`, `1.2G`: sizes in at most 7 cells.
pub fn short_bytes(n: u64) -> String {
    super::format::scaled_bytes(n, ["B", "K", "M", "G", "T"], "")
}

// ------------------------------------------------------------------- state

/// What the background tasks tell the screen.
enum Msg {
    List(Result<Vec<ProcessView>, String>),
    Log {
        generation: u64,
        err: bool,
        line: String,
    },
    LogEnded {
        generation: u64,
        why: String,
    },
    Acted(String),
}

/// The selected process's log: which stream feeds it, and its last lines.
#[derive(Default)]
struct LogPane {
    /// The process whose stream is open (or was, until `ended`).
    id: Option<u64>,
    /// Counts the streams opened, so lines of a closed one are ignored.
    generation: u64,
    lines: VecDeque<(bool, String)>,
    ended: Option<String>,
    task: Option<JoinHandle<()>>,
}

impl LogPane {
    /// Opens the stream of `id` (closing the one open), from the last lines.
    fn open(&mut self, id: Option<u64>, client: &Client, tx: &mpsc::Sender<Msg>) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.generation += 1;
        self.id = id;
        self.lines.clear();
        self.ended = None;
        if let Some(id) = id {
            let (client, tx, generation) = (client.clone(), tx.clone(), self.generation);
            self.task = Some(tokio::spawn(follow_log(client, id, generation, tx)));
        }
    }

    fn take(&mut self, generation: u64, err: bool, line: String) {
        if generation != self.generation {
            return;
        }
        self.lines.push_back((err, printable(&line)));
        while self.lines.len() > LOG_KEEP {
            self.lines.pop_front();
        }
    }
}

impl Drop for LogPane {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct App {
    /// Where the processes run, for the title.
    place: String,
    views: Vec<ProcessView>,
    history: History,
    selection: Selection,
    table: TableState,
    /// Why the last poll failed, while the next has not succeeded.
    list_error: Option<String>,
    /// The outcome of the last action, and since when it is shown.
    said: Option<(Instant, String)>,
    log: LogPane,
}

impl App {
    fn take_list(&mut self, list: Result<Vec<ProcessView>, String>) {
        match list {
            Ok(views) => {
                self.history.record(&views, crate::spec::now_ms());
                self.selection.refresh(&views);
                self.views = views;
                self.list_error = None;
            }
            Err(e) => self.list_error = Some(e),
        }
    }

    fn say(&mut self, text: String) {
        self.said = Some((Instant::now(), text));
    }

    fn name_of(&self, id: u64) -> String {
        self.views
            .iter()
            .find(|v| v.id == id)
            .map_or_else(|| id.to_string(), |v| printable(&v.name))
    }
}

// --------------------------------------------------------------- the loop

/// `opm monit`.
pub async fn monit(a: MonitArgs) -> Result<(), CliError> {
    if !std::io::stdout().is_terminal() {
        return Err(CliError::Usage(
            "opm monit draws a dashboard and needs a terminal, but its output is not one \
             (for scripts: `opm list --format json`, `opm logs NAME`)"
                .into(),
        ));
    }
    let client = target(&a.remote)?;
    // The first poll before the screen changes: a daemon or server that
    // cannot answer is reported like any other command's failure.
    let first: Vec<ProcessView> = client.get("/daemon/list").await?;
    let place = match &a.remote.server {
        Some(s) => format!("--server {}", printable(s)),
        None => "this machine".to_string(),
    };
    let mut app = App {
        place,
        views: Vec::new(),
        history: History::new(HISTORY_SAMPLES),
        selection: Selection::default(),
        table: TableState::default(),
        list_error: None,
        said: None,
        log: LogPane::default(),
    };
    // The daemon's own history fills the sparklines' past at once; a daemon
    // (or agent) without one leaves them to fill as monit polls.
    if let Ok(h) = client
        .get::<crate::model::HistoryResponse<u64>>("/daemon/history")
        .await
    {
        for subject in h.subjects {
            let s = &subject.series;
            app.history.add(
                subject.id,
                (0..s.at_ms.len()).map(|i| Sample {
                    at_ms: s.at_ms[i],
                    cpu: s.cpu.get(i).copied().unwrap_or(0.0),
                    memory: s.memory.get(i).copied().unwrap_or(0),
                }),
            );
        }
    }
    app.take_list(Ok(first));
    let signals = Signals::new()?;
    let mut screen =
        Screen::enter().map_err(|e| CliError::io("cannot take over the terminal", e))?;
    let result = run(&mut screen, &mut app, client, signals).await;
    drop(screen);
    result
}

/// The signals that end monit (SIGINT only comes from `kill`: in raw mode
/// Ctrl-C is a key).
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, CliError> {
        use tokio::signal::unix::{signal, SignalKind};
        let on = |k: SignalKind| signal(k).map_err(|e| CliError::io("cannot watch for signals", e));
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
            int: on(SignalKind::interrupt())?,
        })
    }
}

async fn run(
    screen: &mut Screen,
    app: &mut App,
    client: Client,
    mut signals: Signals,
) -> Result<(), CliError> {
    let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL);
    let wake = Arc::new(Notify::new());
    let poller = AbortOnDrop(tokio::spawn(poll_list(
        client.clone(),
        tx.clone(),
        wake.clone(),
    )));
    let mut keys = EventStream::new();
    let draw_failed = |e: std::io::Error| CliError::io("cannot draw on the terminal", e);
    loop {
        if PANICKED.load(Ordering::Relaxed) {
            return Err(CliError::Internal(
                "opm monit stopped after an internal error (printed above)",
            ));
        }
        if app.log.id != app.selection.id() {
            app.log.open(app.selection.id(), &client, &tx);
        }
        screen
            .terminal
            .draw(|f| draw(f, app))
            .map_err(draw_failed)?;
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                take(app, msg);
                // Everything already waiting, before the next drawing.
                while let Ok(msg) = rx.try_recv() {
                    take(app, msg);
                }
            }
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    #[cfg(feature = "failpoints")]
                    if std::env::var_os(PANIC_ON_KEY).is_some() {
                        panic!("{PANIC_ON_KEY} is set: a panic on the first key, for the tests");
                    }
                    match input(key) {
                        Some(Input::Quit) => break,
                        Some(Input::Act(action)) => act(app, action, &client, &tx, &wake),
                        Some(moved) => app.selection.step(&app.views, moved),
                        None => {}
                    }
                }
                // A resize (drawn again at the top of the loop), mouse, focus.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(CliError::io("cannot read the terminal", e)),
                None => break,
            },
            _ = tokio::time::sleep(LOG_RETRY), if app.log.ended.is_some() => {
                app.log.open(app.selection.id(), &client, &tx);
            }
            _ = signals.term.recv() => break,
            _ = signals.hup.recv() => break,
            _ = signals.int.recv() => break,
        }
    }
    drop(poller);
    Ok(())
}

fn take(app: &mut App, msg: Msg) {
    match msg {
        Msg::List(list) => app.take_list(list),
        Msg::Log {
            generation,
            err,
            line,
        } => app.log.take(generation, err, line),
        Msg::LogEnded { generation, why } => {
            if generation == app.log.generation {
                app.log.ended = Some(why);
            }
        }
        Msg::Acted(said) => app.say(said),
    }
}

/// Sends `action` for the selected process in the background; its outcome
/// comes back as a message, and the list is polled again at once.
fn act(
    app: &mut App,
    action: ActionKind,
    client: &Client,
    tx: &mpsc::Sender<Msg>,
    wake: &Arc<Notify>,
) {
    let Some(id) = app.selection.id() else {
        app.say("no process to act on".into());
        return;
    };
    let name = app.name_of(id);
    app.say(format!("… {} {name} (id {id})", action.as_str()));
    let (client, tx, wake) = (client.clone(), tx.clone(), wake.clone());
    tokio::spawn(async move {
        let result = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            send_action(&client, Target::Id(id), action),
        )
        .await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())),
        };
        let _ = tx
            .send(Msg::Acted(outcome(action, &name, id, &result)))
            .await;
        wake.notify_one();
    });
}

/// Polls the list every `POLL_INTERVAL`, and at once when woken.
async fn poll_list(client: Client, tx: mpsc::Sender<Msg>, wake: Arc<Notify>) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once; monit drew the first list itself.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => tick.reset(),
        }
        let list = match tokio::time::timeout(REQUEST_TIMEOUT, client.get("/daemon/list")).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())),
        };
        if tx.send(Msg::List(list)).await.is_err() {
            return;
        }
    }
}

/// Sends the lines of `id`'s live log stream until it ends.
async fn follow_log(client: Client, id: u64, generation: u64, tx: mpsc::Sender<Msg>) {
    let why = match client
        .stream(&format!("/daemon/logs/{id}/stream?lines={LOG_TAIL}"))
        .await
    {
        Err(e) => e.to_string(),
        Ok(body) => {
            let mut events = SseReader::new(body);
            loop {
                match events.next().await {
                    Ok(Some((event, line))) => {
                        let err = match event.as_str() {
                            "out" => false,
                            "err" => true,
                            "error" => break line,
                            _ => continue,
                        };
                        let msg = Msg::Log {
                            generation,
                            err,
                            line,
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the log stream ended".to_string(),
                    Err(e) => break e.to_string(),
                }
            }
        }
    };
    let _ = tx.send(Msg::LogEnded { generation, why }).await;
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// --------------------------------------------------------------- the terminal

/// Set by the panic hook: the screen was given back, monit must stop drawing.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// The terminal in raw mode on the alternate screen, given back when dropped.
struct Screen {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
    /// Dropped after the terminal.
    _held: Held,
}

/// Gives the terminal back when dropped.
struct Held;

impl Drop for Held {
    fn drop(&mut self) {
        leave();
    }
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        install_panic_hook();
        ON_SCREEN.store(true, Ordering::SeqCst);
        // From here on, a failure gives the terminal back on the way out.
        let held = Held;
        crossterm::terminal::enable_raw_mode()?;
        crossterm::execute!(
            std::io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        terminal.clear()?;
        Ok(Screen {
            terminal,
            _held: held,
        })
    }
}

/// Whether monit holds the terminal (raw mode, alternate screen).
static ON_SCREEN: AtomicBool = AtomicBool::new(false);

/// Leaves raw mode and the alternate screen, and shows the cursor, once:
/// the panic hook and then the unwinding both call it, and leaving the
/// alternate screen twice would move the cursor back over what the panic
/// printed.
fn leave() {
    if !ON_SCREEN.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// A panic gives the terminal back before its message is printed, so the
/// message is readable and the shell usable.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::Relaxed);
            leave();
            previous(info);
        }));
    });
}

// ---------------------------------------------------------------- drawing

fn status_color(s: Status) -> Color {
    match s {
        Status::Online => Color::Green,
        Status::Stopped => Color::DarkGray,
        Status::Errored => Color::Red,
        Status::Starting | Status::Stopping | Status::Waiting => Color::Yellow,
        Status::Exited => Color::Blue,
    }
}

fn draw(f: &mut Frame, app: &mut App) {
    let [title, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let h = heights(body.height, app.views.len());
    let [table, charts, logs] = Layout::vertical([
        Constraint::Length(h.table),
        Constraint::Length(h.charts),
        Constraint::Length(h.logs),
    ])
    .areas(body);
    draw_title(f, title, app);
    draw_table(f, table, app);
    if charts.height > 0 {
        draw_charts(f, charts, app);
    }
    if logs.height > 0 {
        draw_log(f, logs, app);
    }
    draw_help(f, help, app);
}

/// The keys, or for a few seconds the outcome of the last action.
fn draw_help(f: &mut Frame, area: Rect, app: &App) {
    let width = usize::from(area.width);
    let line = match &app.said {
        Some((at, said)) if at.elapsed() < SAID_FOR => {
            let color = if said.starts_with('✘') {
                Color::Red
            } else {
                Color::Reset
            };
            Line::styled(fit(said, width), Style::new().fg(color))
        }
        _ => Line::styled(fit(HELP, width), Style::new().fg(Color::DarkGray)),
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_title(f: &mut Frame, area: Rect, app: &App) {
    let count = match app.views.len() {
        1 => "1 process".to_string(),
        n => format!("{n} processes"),
    };
    let mut spans = vec![
        Span::styled("opm monit", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(" · {} · {count}", app.place)),
    ];
    if let Some(e) = &app.list_error {
        spans.push(Span::styled(
            format!("  ✘ {} (trying again)", printable(e)),
            Style::new().fg(Color::Red),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_table(f: &mut Frame, area: Rect, app: &mut App) {
    let names = app
        .views
        .iter()
        .map(|v| printable(&v.name))
        .collect::<Vec<_>>();
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let cols = columns(area.width, u16::try_from(longest).unwrap_or(u16::MAX));
    let header = Row::new(cols.iter().map(|(c, _)| Cell::from(c.header())))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows: Vec<Row> = if app.views.is_empty() {
        vec![Row::new([Cell::from(
            "no processes (`opm start` adds one)",
        )])]
    } else {
        app.views
            .iter()
            .zip(&names)
            .map(|(v, name)| Row::new(cols.iter().map(|&(c, w)| cell(app, v, name, c, w))))
            .collect()
    };
    let widths = if app.views.is_empty() {
        vec![Constraint::Fill(1)]
    } else {
        cols.iter().map(|(_, w)| Constraint::Length(*w)).collect()
    };
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .highlight_symbol(MARK)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    app.table.select(app.selection.index());
    f.render_stateful_widget(table, area, &mut app.table);
}

fn cell<'a>(app: &App, v: &ProcessView, name: &str, c: Column, w: u16) -> Cell<'a> {
    let running = v.pid.is_some();
    let dash = || Cell::from("-");
    match c {
        Column::Name => Cell::from(fit(name, usize::from(w))),
        Column::Id => Cell::from(v.id.to_string()),
        Column::Status => {
            Cell::from(v.status.as_str()).style(Style::new().fg(status_color(v.status)))
        }
        Column::Pid => v.pid.map_or_else(dash, |p| Cell::from(p.to_string())),
        Column::Cpu if running => Cell::from(if v.cpu >= 1000.0 {
            format!("{:.0}%", v.cpu)
        } else {
            format!("{:.1}%", v.cpu)
        }),
        Column::Memory if running => Cell::from(short_bytes(v.memory)),
        Column::Cpu | Column::Memory => dash(),
        Column::Restarts => Cell::from(v.restarts.to_string()),
        Column::Uptime if v.status == Status::Online => Cell::from(format::duration(v.uptime_ms)),
        Column::Uptime => dash(),
        Column::CpuTrend => {
            let s = app.history.last(v.id, usize::from(w));
            let values: Vec<f64> = s.iter().map(|x| f64::from(x.cpu)).collect();
            Cell::from(spark(&values, cpu_scale(&s), usize::from(w)))
                .style(Style::new().fg(Color::Green))
        }
        Column::MemoryTrend => {
            let s = app.history.last(v.id, usize::from(w));
            let values: Vec<f64> = s.iter().map(|x| x.memory as f64).collect();
            Cell::from(spark(&values, memory_scale(&s) as f64, usize::from(w)))
                .style(Style::new().fg(Color::Cyan))
        }
    }
}

fn draw_charts(f: &mut Frame, area: Rect, app: &App) {
    let [left, right] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
    let Some(id) = app.selection.id() else {
        f.render_widget(Block::bordered().title(" cpu "), left);
        f.render_widget(Block::bordered().title(" memory "), right);
        return;
    };
    let width = usize::from(left.width.saturating_sub(2));
    let s = app.history.last(id, width);
    let now = s.last().copied();
    // Tenths of a percent: the bars keep the decimals.
    let top = cpu_scale(&s);
    let cpu: Vec<u64> = s
        .iter()
        .map(|x| (f64::from(x.cpu).clamp(0.0, top) * 10.0) as u64)
        .collect();
    let peak_cpu = s.iter().map(|x| x.cpu).fold(0.0, f32::max);
    let cpu_title = format!(
        " cpu {:.1}% · peak {peak_cpu:.1}% · of {top:.0}% ",
        now.map_or(0.0, |x| x.cpu)
    );
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(fit(&cpu_title, width)))
            .data(cpu)
            .max((top * 10.0) as u64)
            .style(Style::new().fg(Color::Green)),
        left,
    );
    let width = usize::from(right.width.saturating_sub(2));
    let s = app.history.last(id, width);
    let peak = memory_scale(&s);
    let memory: Vec<u64> = s.iter().map(|x| x.memory).collect();
    let mem_title = format!(
        " memory {} · peak {} ",
        short_bytes(now.map_or(0, |x| x.memory)),
        short_bytes(peak)
    );
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(fit(&mem_title, width)))
            .data(memory)
            .max(peak)
            .style(Style::new().fg(Color::Cyan)),
        right,
    );
}

fn draw_log(f: &mut Frame, area: Rect, app: &App) {
    let title = match app.selection.id() {
        Some(id) => format!(" {} (id {id}) · log ", app.name_of(id)),
        None => " log ".to_string(),
    };
    let inner = usize::from(area.height.saturating_sub(2));
    let mut lines: Vec<Line> = Vec::new();
    if let Some(why) = &app.log.ended {
        lines.push(Line::styled(
            format!("✘ {} (opening it again)", printable(why)),
            Style::new().fg(Color::Red),
        ));
    }
    let room = inner.saturating_sub(lines.len());
    let skip = app.log.lines.len().saturating_sub(room);
    lines.extend(app.log.lines.iter().skip(skip).map(|(err, text)| {
        if *err {
            Line::styled(format!("err | {text}"), Style::new().fg(Color::Red))
        } else {
            Line::raw(format!("out | {text}"))
        }
    }));
    let width = usize::from(area.width.saturating_sub(2));
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(fit(&title, width))),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, name: &str) -> ProcessView {
        ProcessView {
            id,
            name: name.into(),
            pid: Some(100 + id as u32),
            status: Status::Online,
            restarts: 0,
            uptime_ms: 0,
            cpu: 0.0,
            memory: 0,
            command: String::new(),
            cwd: String::new(),
            autorestart: true,
            desired: "running".into(),
            error: None,
            instance: None,
            instances: 1,
            restart_at_ms: None,
            exit_code: None,
        }
    }

    fn sample(at_ms: u64, cpu: f32) -> Sample {
        Sample {
            at_ms,
            cpu,
            memory: at_ms * 10,
        }
    }

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn a_ring_keeps_only_the_newest_samples() {
        let mut h = History::new(3);
        for t in 1..=5 {
            h.add(7, [sample(t, t as f32)]);
        }
        let kept: Vec<u64> = h.last(7, 10).iter().map(|s| s.at_ms).collect();
        assert_eq!(kept, [3, 4, 5]);
        assert_eq!(
            h.last(7, 2).iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            [4, 5]
        );
        assert!(h.last(8, 10).is_empty());
    }

    #[test]
    fn a_ring_can_be_filled_with_the_past_after_polls_began() {
        let mut h = History::new(5);
        h.add(1, [sample(10, 1.0), sample(11, 1.0)]);
        // A history arriving later, in any order, overlapping what was polled.
        h.add(
            1,
            [
                sample(9, 0.5),
                sample(7, 0.5),
                sample(10, 9.0),
                sample(8, 0.5),
            ],
        );
        let s = h.last(1, 10);
        assert_eq!(
            s.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            [7, 8, 9, 10, 11]
        );
        // The polled sample at 10 was kept, not the late duplicate.
        assert_eq!(s[3].cpu, 1.0);
        // Older than everything in a full ring: dropped.
        h.add(1, [sample(1, 0.0)]);
        assert_eq!(h.last(1, 10)[0].at_ms, 7);
    }

    #[test]
    fn a_poll_adds_a_sample_per_process_and_forgets_removed_ones() {
        let mut h = History::new(10);
        let mut a = view(0, "a");
        a.cpu = 12.5;
        a.memory = 4096;
        h.record(&[a.clone(), view(1, "b")], 1000);
        h.record(&[a], 2000);
        assert_eq!(
            h.last(0, 10),
            [
                Sample {
                    at_ms: 1000,
                    cpu: 12.5,
                    memory: 4096
                },
                Sample {
                    at_ms: 2000,
                    cpu: 12.5,
                    memory: 4096
                }
            ]
        );
        assert!(h.last(1, 10).is_empty(), "b is gone from the list");
    }

    #[test]
    fn sparklines_put_the_newest_on_the_right_and_scale_to_the_max() {
        assert_eq!(spark(&[0.0, 50.0, 100.0], 100.0, 5), "   ▄█");
        assert_eq!(spark(&[1.0, 2.0, 3.0, 4.0], 4.0, 2), "▆█");
        // A tiny value still shows; nothing at all is blank.
        assert_eq!(spark(&[0.1, 0.0], 100.0, 2), "▁ ");
        assert_eq!(spark(&[], 1.0, 3), "   ");
        assert_eq!(spark(&[5.0], 0.0, 1), " ");
    }

    #[test]
    fn cpu_is_scaled_to_one_core_unless_a_process_used_more() {
        assert_eq!(cpu_scale(&[sample(1, 3.0)]), 100.0);
        assert_eq!(cpu_scale(&[sample(1, 3.0), sample(2, 250.0)]), 250.0);
        assert_eq!(memory_scale(&[]), 1);
        assert_eq!(memory_scale(&[sample(3, 0.0), sample(5, 0.0)]), 50);
    }

    #[test]
    fn every_column_fits_in_80_cells() {
        let cols = columns(80, 8);
        assert_eq!(cols.iter().map(|c| c.0).collect::<Vec<_>>(), Column::ALL);
        let used: u16 =
            MARK.len() as u16 + cols.iter().map(|c| c.1).sum::<u16>() + cols.len() as u16 - 1;
        assert!(used <= 80, "{used} cells: {cols:?}");
    }

    #[test]
    fn narrow_terminals_drop_the_least_needed_columns_first() {
        let at = |w| columns(w, 10).iter().map(|c| c.0).collect::<Vec<_>>();
        assert!(!at(72).contains(&Column::Pid));
        assert!(at(72).contains(&Column::Uptime));
        assert_eq!(
            at(40),
            [Column::Name, Column::Status, Column::Cpu, Column::Memory]
        );
        // Never fewer than those four, however narrow.
        assert_eq!(at(10).len(), 4);
        for w in 37..200 {
            let cols = columns(w, 50);
            let used =
                MARK.len() as u16 + cols.iter().map(|c| c.1).sum::<u16>() + cols.len() as u16 - 1;
            assert!(used <= w, "{w}: {used} cells: {cols:?}");
        }
    }

    #[test]
    fn room_to_spare_widens_the_name_then_the_trends() {
        let cols = columns(120, 20);
        let width = |c| cols.iter().find(|x| x.0 == c).map(|x| x.1);
        assert_eq!(width(Column::Name), Some(20));
        assert!(width(Column::CpuTrend) > Some(Column::CpuTrend.min_width()));
        assert_eq!(width(Column::CpuTrend), width(Column::MemoryTrend));
        assert!(width(Column::CpuTrend) <= Some(TREND_MAX));
    }

    #[test]
    fn an_80_by_24_window_has_the_table_the_charts_and_a_log() {
        // 24 rows less the title and the help line.
        assert_eq!(
            heights(22, 3),
            Heights {
                table: 4,
                charts: 5,
                logs: 13
            }
        );
        // Many processes: the table scrolls, the log keeps its minimum.
        assert_eq!(
            heights(22, 100),
            Heights {
                table: 11,
                charts: 5,
                logs: 6
            }
        );
        // No processes: the header and one line saying so.
        assert_eq!(heights(22, 0).table, 2);
    }

    #[test]
    fn low_terminals_lose_the_charts_then_the_log() {
        assert_eq!(
            heights(12, 2),
            Heights {
                table: 3,
                charts: 0,
                logs: 9
            }
        );
        assert_eq!(
            heights(6, 2),
            Heights {
                table: 6,
                charts: 0,
                logs: 0
            }
        );
        assert_eq!(
            heights(0, 2),
            Heights {
                table: 0,
                charts: 0,
                logs: 0
            }
        );
    }

    #[test]
    fn keys_mean_what_the_help_line_says() {
        let none = KeyModifiers::NONE;
        assert_eq!(
            input(key(KeyCode::Char('r'), none)),
            Some(Input::Act(ActionKind::Restart))
        );
        assert_eq!(
            input(key(KeyCode::Char('s'), none)),
            Some(Input::Act(ActionKind::Stop))
        );
        assert_eq!(
            input(key(KeyCode::Char('S'), KeyModifiers::SHIFT)),
            Some(Input::Act(ActionKind::Start))
        );
        assert_eq!(input(key(KeyCode::Down, none)), Some(Input::Down));
        assert_eq!(input(key(KeyCode::Char('j'), none)), Some(Input::Down));
        assert_eq!(input(key(KeyCode::Up, none)), Some(Input::Up));
        assert_eq!(input(key(KeyCode::Char('k'), none)), Some(Input::Up));
        assert_eq!(input(key(KeyCode::Char('q'), none)), Some(Input::Quit));
        assert_eq!(input(key(KeyCode::Esc, none)), Some(Input::Quit));
        assert_eq!(
            input(key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Input::Quit)
        );
        // Ctrl or Alt with a letter is not the letter.
        assert_eq!(input(key(KeyCode::Char('r'), KeyModifiers::CONTROL)), None);
        assert_eq!(input(key(KeyCode::Char('s'), KeyModifiers::ALT)), None);
        assert_eq!(input(key(KeyCode::Char('x'), none)), None);
        for word in ["select", "r restart", "s stop", "S start", "q quit"] {
            assert!(HELP.contains(word), "{word}");
        }
    }

    #[test]
    fn a_held_key_moves_but_never_repeats_an_action() {
        let held = |code| {
            let mut k = key(code, KeyModifiers::NONE);
            k.kind = KeyEventKind::Repeat;
            input(k)
        };
        assert_eq!(held(KeyCode::Down), Some(Input::Down));
        assert_eq!(held(KeyCode::Char('r')), None);
        let mut released = key(KeyCode::Char('q'), KeyModifiers::NONE);
        released.kind = KeyEventKind::Release;
        assert_eq!(input(released), None);
    }

    #[test]
    fn the_selection_follows_its_process_and_stays_in_the_list() {
        let list = [view(0, "a"), view(1, "b"), view(2, "c")];
        let mut s = Selection::default();
        s.refresh(&list);
        assert_eq!((s.id(), s.index()), (Some(0), Some(0)));
        s.step(&list, Input::Up);
        assert_eq!(s.index(), Some(0), "no move above the first");
        s.step(&list, Input::Down);
        s.step(&list, Input::Down);
        s.step(&list, Input::Down);
        assert_eq!((s.id(), s.index()), (Some(2), Some(2)));
        // The list changes order: the same process stays selected.
        let reordered = [view(2, "c"), view(0, "a"), view(1, "b")];
        s.refresh(&reordered);
        assert_eq!((s.id(), s.index()), (Some(2), Some(0)));
        // It is removed: the one now at its place is selected.
        s.refresh(&reordered[1..]);
        assert_eq!((s.id(), s.index()), (Some(0), Some(0)));
        s.step(&reordered[1..], Input::Last);
        assert_eq!(s.id(), Some(1));
        s.refresh(&[]);
        assert_eq!((s.id(), s.index()), (None, None));
    }

    #[test]
    fn an_outcome_says_whether_the_action_got_there() {
        let mut v = view(3, "api");
        let resp = |v: &ProcessView| {
            Ok(ActionResponse {
                action: ActionKind::Restart,
                processes: vec![v.clone()],
                removed: vec![],
                reloads: vec![],
            })
        };
        assert_eq!(
            outcome(ActionKind::Restart, "api", 3, &resp(&v)),
            "✔ restart api (id 3): online"
        );
        v.status = Status::Stopping;
        assert_eq!(
            outcome(ActionKind::Stop, "api", 3, &resp(&v)),
            "… stop api (id 3): stopping"
        );
        v.status = Status::Waiting;
        v.error = Some("command not found".into());
        assert_eq!(
            outcome(ActionKind::Start, "api", 3, &resp(&v)),
            "✘ start api (id 3): command not found"
        );
        assert_eq!(
            outcome(
                ActionKind::Restart,
                "api",
                3,
                &Err("no such process".into())
            ),
            "✘ restart api (id 3): no such process"
        );
    }

    #[test]
    fn log_lines_cannot_drive_the_terminal() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(printable("a\tb"), "a    b");
        assert_eq!(printable("bell\u{7}"), "bell\\u{7}");
        assert_eq!(printable("\u{1b}]0;title"), "\\u{1b}]0;title");
        // An unfinished sequence at the end eats nothing after it.
        assert_eq!(printable("x\u{1b}["), "x");
    }

    #[test]
    fn cut_text_ends_with_an_ellipsis() {
        assert_eq!(fit("monit-echo", 10), "monit-echo");
        assert_eq!(fit("a-very-long-name", 8), "a-very-…");
        assert_eq!(short_bytes(512), "512B");
        assert_eq!(short_bytes(1536), "1.5K");
        assert_eq!(short_bytes(1023 * 1024 * 1024 + 900 * 1024), "1023.9M");
    }
}
