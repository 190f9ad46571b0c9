//! What belongs to a p2pft process as a whole rather than to one peer: the
//! diagnostics sink on stderr (and its [`NOTE`] target), output on stdout
//! that survives a closed pipe, and what the first and later signals do.
//!
//! Used by the engine and peers as well as by the command line, so it sits
//! below all of them; it never decides anything about the protocol.

/// The log target of notes worth showing by default although they are no
/// warning: long start-up passes (a seed checking its file, a leecher
/// re-hashing what it has to resume), said as they begin and end.
pub(crate) const NOTE: &str = "p2pft::note";

/// Diagnostics (not the spec log) go to stderr, prefixed so they cannot be
/// mistaken for spec lines. `P2PFT_LOG=debug` shows more.
pub(crate) fn init_diagnostics(prefix: String) {
    let level = std::env::var("P2PFT_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    // Notes show at the default level; `P2PFT_LOG=error` (or `off`) hides them.
    let note_level = if level >= log::LevelFilter::Warn {
        level.max(log::LevelFilter::Info)
    } else {
        level
    };
    // The engine names its peer in what it says, as several peers may share
    // a process; where the prefix names it already, it is said once.
    let named = format!("{prefix}: ");
    let _ = fern::Dispatch::new()
        .format(move |out, message, record| {
            let text = message.to_string();
            out.finish(format_args!(
                "{prefix}: {}: {}",
                record.level().as_str().to_lowercase(),
                text.strip_prefix(&named).unwrap_or(&text)
            ))
        })
        .level(level)
        .level_for(NOTE, note_level)
        .chain(fern::Output::writer(Box::new(Stderr), "\n"))
        .apply();
}

/// Standard error, dropping what cannot be written: with nobody reading it
/// any more (a launcher gone, `2>&1 | head`), fern would panic the thread
/// that logs, where a diagnostic must never stop anything.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The first of `signals` calls `first` (from a thread of its own, named
/// "signals"); any later one ends the process at once with 128 + it. The
/// policy of a peer (SIGINT, SIGTERM: a clean stop through its engine) and
/// of a launcher (SIGHUP too: pass it on to the peers, then clean up).
pub(crate) fn on_signals(
    signals: &[i32],
    first: impl Fn(i32) + Send + 'static,
) -> std::io::Result<()> {
    let mut caught = signal_hook::iterator::Signals::new(signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in caught.forever() {
                seen += 1;
                if seen > 1 {
                    std::process::exit(128 + signal);
                }
                first(signal);
            }
        })?;
    Ok(())
}

/// What a launcher prints of `value`: one line of JSON, or its table.
pub(crate) fn render<T: serde::Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce(&mut String, &T) -> std::fmt::Result,
) -> String {
    if json {
        serde_json::to_string(value).expect("serializes") + "\n"
    } else {
        let mut text = String::new();
        table(&mut text, value).expect("a String takes any text");
        text
    }
}

/// Writes `text` to stdout; false when it cannot be written (nobody reads
/// it any more), where `print!` would panic.
pub(crate) fn emit(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}
