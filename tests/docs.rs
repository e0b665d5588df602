//! What a newcomer reads and types: the man pages and shell completions
//! the binary generates from its own clap definitions, the docs' links,
//! and the getting-started guide, run as shown.

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

/// The repository's root: the docs' links are relative to their files in it.
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every Markdown file in docs/.
fn markdown_files() -> Vec<std::path::PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines of `text` outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .map(|(i, line)| (i + 1, line))
        .collect()
}

/// The targets of the inline links `[text](target)` on a line, outside
/// code spans.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut in_code = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => in_code = !in_code,
            b']' if !in_code && bytes.get(i + 1) == Some(&b'(') => {
                if let Some(len) = line[i + 2..].find(')') {
                    targets.push(&line[i + 2..i + 2 + len]);
                    i += 2 + len;
                }
            }
            _ => {}
        }
        i += 1;
    }
    targets
}

/// The anchors GitHub gives a Markdown file's headings: lower case, the
/// punctuation dropped, spaces as hyphens, a repeat numbered.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    for (_, line) in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = bases.iter().filter(|base| **base == slug).count();
        bases.push(slug.clone());
        seen.push(if repeats == 0 {
            slug.clone()
        } else {
            format!("{slug}-{repeats}")
        });
    }
    seen
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file
            .strip_prefix(repo_root())
            .unwrap()
            .display()
            .to_string();
        for (number, line) in prose(&text) {
            for target in link_targets(line) {
                if ["http://", "https://", "mailto:"]
                    .iter()
                    .any(|scheme| target.starts_with(scheme))
                {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target, None),
                };
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !dest.exists() {
                    broken.push(format!("{name}:{number}: {target}: no such file"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let held = anchors(&std::fs::read_to_string(&dest).unwrap_or_default());
                    if !held.iter().any(|a| a == anchor) {
                        broken.push(format!(
                            "{name}:{number}: {target}: no heading has that anchor"
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 50,
        "only {checked} links found: is the scan right?"
    );
}

#[test]
fn the_anchor_rule_is_githubs() {
    let text = "# A key's life: rotation, `last` use\n## Serving proxies: `keyscope serve`\n\
                ```\n# not a heading\n```\n## Install: a package\n## Install\n## Install\n";
    assert_eq!(
        anchors(text),
        [
            "a-keys-life-rotation-last-use",
            "serving-proxies-keyscope-serve",
            "install-a-package",
            "install",
            "install-1"
        ]
    );
    assert_eq!(
        link_targets("see [a](b.md#c) and `[x](y)` and [d](e)"),
        ["b.md#c", "e"]
    );
}

/// The getting-started guide's shell blocks, in order, as one script.
#[test]
fn every_command_of_getting_started_runs_as_shown() {
    let guide = std::fs::read_to_string(repo_root().join("docs/getting-started.md")).unwrap();
    let mut script = String::new();
    let mut block = None;
    for line in guide.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(String::new()),
            (Some(text), "```") => {
                script.push_str(text);
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    for step in [
        "scope create",
        "key create",
        "eval",
        "keyscope serve",
        "key revoke",
    ] {
        assert!(script.contains(step), "the guide lost its `{step}` step");
    }
    let s = Sandbox::new();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_keyscope"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Bounded, and the server it starts is stopped whatever happens.
    let output = Command::new("timeout")
        .args(["120", "bash", "--norc", "--noprofile", "-c"])
        .arg(format!(
            "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
        ))
        .current_dir(s.path(""))
        .env("PATH", path)
        .env_remove("KEYSCOPE_STORE")
        .env_remove("KEYSCOPE_API_KEY")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the guide failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("allow: allowed"), "{stdout}");
    assert!(stdout.contains("deny: insufficient-permission"), "{stdout}");
    assert!(stdout.contains("200\n"), "{stdout}");
}
