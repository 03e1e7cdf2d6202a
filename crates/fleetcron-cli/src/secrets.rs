//! The secrets this process knows (store URLs from the command line, `FLEETCRON_STORE` and the
//! configuration file; the HTTP tasks' URLs and headers), and the panic hook that scrubs them.
//!
//! Every message fleetcron composes shows URLs through `fleetcron_core::redact`; this registry is the
//! last line of defence for text nobody composed: panic messages and command-line parse errors, which
//! may quote an argument or a driver's message whole.

use crate::config::{Action, DaemonConfig};
use fleetcron::Secrets;
use std::sync::{Mutex, OnceLock, PoisonError};

fn known() -> &'static Mutex<Secrets> {
    static KNOWN: OnceLock<Mutex<Secrets>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(Secrets::none()))
}

/// Registers the secrets of a URL (its password and secret query values).
pub fn protect_url(url: &str) {
    let secrets = Secrets::of_url(url);
    if !secrets.is_empty() {
        known().lock().unwrap_or_else(PoisonError::into_inner).extend(&secrets);
    }
}

/// Registers secrets.
pub fn protect(secrets: &Secrets) {
    known().lock().unwrap_or_else(PoisonError::into_inner).extend(secrets);
}

/// Registers the secrets of the process's own invocation: `FLEETCRON_STORE` and every argument that is a
/// URL (`--store URL`, `--store=URL`, a URL given where it does not belong). Other arguments are left
/// alone: a task id such as `a@b` holds no secret, and scrubbing its pieces would garble messages.
pub fn protect_invocation() {
    if let Some(store) = std::env::var_os("FLEETCRON_STORE") {
        protect_url(&store.to_string_lossy());
    }
    for argument in std::env::args_os().skip(1) {
        let argument = argument.to_string_lossy();
        let value = match argument.strip_prefix("--").and_then(|flag| flag.split_once('=')) {
            Some((_, value)) => value,
            None => &argument,
        };
        if value.contains("://") {
            protect_url(value);
        }
    }
}

/// Registers the secrets of a configuration file: its store URL, and each HTTP task's URL and header
/// values.
pub fn protect_config(config: &DaemonConfig) {
    if let Some(store) = &config.store {
        protect_url(store);
    }
    for task in &config.tasks {
        if let Action::Http { .. } = &task.action {
            protect(&crate::exec::http_secrets(&task.action));
        }
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> String {
    known().lock().unwrap_or_else(PoisonError::into_inner).scrub(text)
}

/// Replaces the default panic hook: the panic is reported scrubbed of every registered secret — as an
/// `ERROR` event when logging is set up (so JSON logs get it as JSON), else on stderr like Rust's own
/// hook. Unwinding and the exit code (101 for the main thread) are unchanged.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        let message = scrub(&payload);
        let location = info
            .location()
            .map(|location| format!("{}:{}:{}", location.file(), location.line(), location.column()))
            .unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("<unnamed>").to_owned();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        if tracing::dispatcher::has_been_set() {
            tracing::error!(panic = %message, %location, %thread, "panicked{backtrace}");
        } else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "thread '{thread}' panicked at {location}:\n{message}{backtrace}"
            );
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a shared buffer, for the subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn panics_are_logged_as_json_without_the_secrets() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of these tests");
        protect_url("redis://:Pan1cSecret%2F@h:6379");
        install_panic_hook();
        let outcome = std::panic::catch_unwind(|| {
            let url = "redis://:Pan1cSecret%2F@h:6379";
            panic!("could not use {url}: wrong password Pan1cSecret/");
        });
        // Back to the default hook, for the other tests' failures.
        let _ = std::panic::take_hook();
        assert!(outcome.is_err());
        let text = String::from_utf8_lossy(&buffer.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned();
        let event: serde_json::Value =
            serde_json::from_str(text.lines().next().unwrap_or_default()).expect("one JSON line");
        assert_eq!(event["level"], "ERROR", "{text}");
        let panic = event["fields"]["panic"].as_str().unwrap_or_default();
        assert_eq!(panic, "could not use redis://:***@h:6379: wrong password ***", "{text}");
        assert!(!text.contains("Pan1cSecret"), "{text}");
    }

    #[test]
    fn registered_secrets_are_scrubbed() {
        protect_url("postgres://u:Reg1stered%40pw@h/db?password=QueryPw9");
        assert_eq!(scrub("a Reg1stered@pw b QueryPw9 c"), "a *** b *** c");
    }
}
