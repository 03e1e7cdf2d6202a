//! What a package installs beside the binary, generated from the command-line definition itself so it
//! never drifts from it: shell completions (`fleetcron completions bash|zsh|fish|…`) and man pages
//! (`fleetcron man` prints fleetcron(1); `fleetcron man --dir DIR` writes it and one page per
//! subcommand, `fleetcron-run.1`, `fleetcron-tasks-list.1`, …).

use crate::{CliError, CliResult};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `fleetcron completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `fleetcron man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write fleetcron.1 and one page per subcommand (fleetcron-run.1, …) into this directory
    /// instead of printing fleetcron.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs, mut command: clap::Command) -> CliResult {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "fleetcron", &mut script);
    print(&script)
}

/// Prints fleetcron(1), or writes every page into `args.dir`.
pub fn man(args: ManArgs, command: clap::Command) -> CliResult {
    // `help` has no page of its own (`generate_to` leaves it out), so fleetcron(1) must not list it.
    let command = command.disable_help_subcommand(true);
    match args.dir {
        Some(dir) => {
            clap_mangen::generate_to(command, &dir).map_err(|error| {
                CliError::runtime(format!("cannot write the man pages into {}: {error}", dir.display()))
            })?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|error| CliError::runtime(format!("cannot render the man page: {error}")))?;
            print(&page)
        }
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn print(bytes: &[u8]) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(error) => Err(CliError::runtime(format!("cannot write to stdout: {error}"))),
    }
}
