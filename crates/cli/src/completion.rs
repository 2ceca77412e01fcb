//! `flotilla completion SHELL`: the shell completion script (clap_complete)
//! for the whole command tree.

use clap::Args;
use clap_complete::Shell;

/// How to install the script, per shell (shown by `--help`).
pub const LONG_ABOUT: &str = "Print a shell completion script for flotilla on stdout.\n\n\
Bash (needs the bash-completion package):\n  \
flotilla completion bash > ~/.local/share/bash-completion/completions/flotilla\n  \
(or, for this shell only: source <(flotilla completion bash))\n\n\
Zsh (a directory on your $fpath; then start a new shell, with compinit in ~/.zshrc):\n  \
mkdir -p ~/.zfunc && flotilla completion zsh > ~/.zfunc/_flotilla\n  \
and in ~/.zshrc, before compinit: fpath=(~/.zfunc $fpath)\n\n\
Fish:\n  \
flotilla completion fish > ~/.config/fish/completions/flotilla.fish\n\n\
Also: elvish, powershell.";

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script of `command` (named `flotilla`) for `shell`.
pub fn write(shell: Shell, command: &mut clap::Command, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, command, "flotilla", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_completing_the_subcommands() {
        let mut command = clap::Command::new("flotilla")
            .subcommand(clap::Command::new("get").subcommand(clap::Command::new("clusters")));
        // What each shell's script looks like: its marker and the subcommand.
        let cases = [
            (Shell::Bash, "_flotilla()"),
            (Shell::Zsh, "#compdef flotilla"),
            (Shell::Fish, "complete -c flotilla"),
            (Shell::Elvish, "edit:completion:arg-completer[flotilla]"),
            (Shell::PowerShell, "Register-ArgumentCompleter"),
        ];
        for (shell, marker) in cases {
            let mut out = Vec::new();
            write(shell, &mut command, &mut out);
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains(marker), "{shell}: no {marker} in\n{script}");
            assert!(script.contains("clusters"), "{shell}: the nested subcommand is missing");
        }
    }
}
