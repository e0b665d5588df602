//! What a newcomer reads and types: the man pages and shell completions
//! the binary generates from its own clap definitions.

use std::process::Command;

use crate::support::Sandbox;

fn keyscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyscope"))
        .args(args)
        .env_remove("KEYSCOPE_STORE")
        .output()
        .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Runs bash with keyscope's completion (the file `script`) sourced and
/// asks it to complete `line` (the cursor at its end); returns the
/// candidates.
fn bash_completes(script: &std::path::Path, line: &str) -> Vec<String> {
    let words: Vec<String> = line.split(' ').map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{script}'\nCOMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
         COMP_POINT=${{#COMP_LINE}}; _keyscope keyscope '{current}' '{previous}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        words = words.join(" "),
        cword = words.len() - 1,
        current = line.rsplit(' ').next().unwrap(),
        previous = line.rsplit(' ').nth(1).unwrap_or(""),
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    stdout(&output).lines().map(str::to_owned).collect()
}

#[test]
fn the_bash_completion_loads_and_completes_commands_and_flags() {
    let s = Sandbox::new();
    let script = s.path("keyscope.bash");
    std::fs::write(&script, stdout(&keyscope(&["completions", "bash"]))).unwrap();
    // It loads into a plain bash and registers itself for keyscope.
    let registered = Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(format!(
            "source '{}'; complete -p keyscope",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(stdout(&registered).contains("_keyscope"), "{registered:?}");
    // Commands, subcommands and flags come from the clap definitions.
    let top = bash_completes(&script, "keyscope ke");
    assert_eq!(top, ["key"], "{top:?}");
    let key = bash_completes(&script, "keyscope key ro");
    assert_eq!(key, ["rotate"], "{key:?}");
    let flags = bash_completes(&script, "keyscope key create --exp");
    assert_eq!(flags, ["--expires-in"], "{flags:?}");
    let shells = bash_completes(&script, "keyscope completions f");
    assert_eq!(shells, ["fish"], "{shells:?}");
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    let zsh = stdout(&keyscope(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef keyscope"), "{zsh:.80}");
    let fish = stdout(&keyscope(&["completions", "fish"]));
    for command in ["scope", "key", "serve", "bundle", "fleet", "man"] {
        assert!(
            fish.contains(&format!("-a \"{command}\"")),
            "fish misses {command}"
        );
        assert!(
            zsh.contains(&format!("'{command}:")),
            "zsh misses {command}"
        );
    }
    // An unknown shell is refused, naming the ones there are.
    let refused = keyscope(&["completions", "tcsh"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("tcsh") && stderr.contains("bash"),
        "{stderr}"
    );
}

#[test]
fn man_pages_render_for_keyscope_and_each_command() {
    let page = stdout(&keyscope(&["man"]));
    assert!(page.contains(".TH keyscope 1"), "{page:.200}");
    let s = Sandbox::new();
    let dir = s.path("man");
    let written = s.json(["man", "--dir", dir.to_str().unwrap()]);
    let pages: Vec<&str> = written["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for expected in [
        "keyscope.1",
        "keyscope-key-create.1",
        "keyscope-serve.1",
        "keyscope-admin-token-create.1",
        "keyscope-completions.1",
    ] {
        assert!(pages.contains(&expected), "{expected} not in {pages:?}");
        assert!(dir.join(expected).is_file(), "{expected}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("-help")),
        "no help pseudo-command pages: {pages:?}"
    );
    // man(1) renders a command's page, flags and all.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.join("keyscope-key-create.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man(1): apt-get install man-db");
    let text = stdout(&rendered);
    assert!(text.contains("keyscope-key-create"), "{text}");
    assert!(text.contains("--expires-in"), "{text}");
    assert!(!text.contains(".TH"), "rendered, not raw roff: {text}");
}
