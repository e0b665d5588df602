//! `keyscope completions SHELL` and `keyscope man`: shell completions and
//! man pages, generated from the same clap definitions that parse the
//! command line, so they can never drift from it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, Output};

/// Print a completion script for a shell.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Load it for this shell: `source <(keyscope completions bash)`.\n\
Install it: the Debian package puts bash's, zsh's and fish's where each shell looks."
)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: Shell,
}

/// Print keyscope's man page, or write one page per command to a directory.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write keyscope.1 and a page per command (keyscope-key-create.1, ...)
    /// into this directory, created if missing, instead of printing
    /// keyscope.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "keyscope", &mut stdout);
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: &ManArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let Some(dir) = &args.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut page)?;
        std::io::stdout().lock().write_all(&page)?;
        return Ok(ExitCode::SUCCESS);
    };
    let pages = write_pages(dir)?;
    out.print(
        &serde_json::json!({ "dir": dir.display().to_string(), "pages": pages }),
        || format!("wrote {} man pages to {}", pages.len(), dir.display()),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a page for keyscope and for every command under it, named as
/// man(1) finds them (`man keyscope-key-create`); returns the file names.
fn write_pages(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    let mut pending = vec![command];
    while let Some(command) = pending.pop() {
        let name = command
            .get_display_name()
            .unwrap_or_else(|| command.get_name())
            .to_owned();
        let file = format!("{name}.1");
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .title(&name)
            .render(&mut page)?;
        std::fs::write(dir.join(&file), page)
            .with_context(|| format!("writing {}", dir.join(&file).display()))?;
        pages.push(file);
        pending.extend(command.get_subcommands().cloned());
    }
    pages.sort();
    Ok(pages)
}
