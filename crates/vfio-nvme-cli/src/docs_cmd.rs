//! `vfio-nvme completions SHELL` and `vfio-nvme man [--dir DIR]`: shell completions and manual
//! pages generated from the command definition, so they never disagree with `--help`.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::Cli;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<String> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "vfio-nvme", &mut script);
    String::from_utf8(script).context("the completion script is not UTF-8")
}

/// The manual pages: with `dir`, every page (`vfio-nvme.1`, `vfio-nvme-serve.1`, …) written
/// there and their list returned; without, the top-level page itself.
pub fn man(dir: Option<&Path>) -> anyhow::Result<String> {
    let command = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .context("cannot render the manual page")?;
        return String::from_utf8(page).context("the manual page is not UTF-8");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "1")
                && path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vfio-nvme"))
        })
        .map(|path| path.display().to_string())
        .collect();
    pages.sort();
    Ok(pages.iter().map(|p| format!("{p}\n")).collect())
}
