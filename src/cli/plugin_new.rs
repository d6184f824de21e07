//! `portcullis plugin new NAME [--lang rust|c|wat] [--dir DIR]`: a buildable plugin project
//! outside this repository — sources, a build script, data-file tests and a README taking a
//! tenant developer from build to upload, explain and rollback. The templates live in
//! `plugins/templates/`; the Rust SDK (`plugins/sdk`) is vendored into Rust projects from this
//! binary, so a project always matches the host that wrote it and builds offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::out;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Wat,
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The plugin (and project) name: lowercase letters, digits and `-`, starting with a
    /// letter, at most 64 bytes.
    name: String,
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to write the project (default: ./NAME). Must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

const README: &str = include_str!("../../plugins/templates/README.md");

const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../plugins/templates/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../plugins/templates/rust/src/lib.rs"),
    ),
    (
        "build.sh",
        include_str!("../../plugins/templates/rust/build.sh"),
    ),
    (
        "tests.yaml",
        include_str!("../../plugins/templates/rust/tests.yaml"),
    ),
    (
        "portcullis-plugin-sdk/Cargo.toml",
        include_str!("../../plugins/sdk/Cargo.toml"),
    ),
    (
        "portcullis-plugin-sdk/src/lib.rs",
        include_str!("../../plugins/sdk/src/lib.rs"),
    ),
    (
        "portcullis-plugin-sdk/src/json.rs",
        include_str!("../../plugins/sdk/src/json.rs"),
    ),
    (
        "portcullis-plugin-sdk/src/time.rs",
        include_str!("../../plugins/sdk/src/time.rs"),
    ),
    (
        "portcullis-plugin-sdk/src/builder.rs",
        include_str!("../../plugins/sdk/src/builder.rs"),
    ),
    (".gitignore", "/target\n*.wasm\n"),
];

const C: &[(&str, &str)] = &[
    (
        "plugin.c",
        include_str!("../../plugins/templates/c/plugin.c"),
    ),
    (
        "portcullis.h",
        include_str!("../../plugins/templates/c/portcullis.h"),
    ),
    (
        "build.sh",
        include_str!("../../plugins/templates/c/build.sh"),
    ),
    (
        "tests.yaml",
        include_str!("../../plugins/templates/c/tests.yaml"),
    ),
    (".gitignore", "*.wasm\n"),
];

const WAT: &[(&str, &str)] = &[
    (
        "__NAME__.wat",
        include_str!("../../plugins/templates/wat/plugin.wat"),
    ),
    (
        "tests.yaml",
        include_str!("../../plugins/templates/wat/tests.yaml"),
    ),
    (".gitignore", "*.wasm\n"),
];

const RUST_NOTES: &str = "\
**Layout.** `src/lib.rs` (the rule and its native unit tests: `cargo test`), `build.sh`,
`tests.yaml`, and `portcullis-plugin-sdk/`: the SDK (typed context access `get_str`/`get_i64`/
`get_bool` with nested paths, UTC time helpers, `set_reason`, `export_plugin!`, a panic handler,
and `InputBuilder`, which writes exactly the bytes the host sends so unit tests run natively).
The SDK is **vendored** — copied into the project by the `portcullis` binary that wrote it —
rather than a crates.io or git dependency: it then matches that host's ABI exactly, needs no
registry or repository access, and builds offline with Debian's rustc 1.63. To update it, run
`portcullis plugin new` of a newer release into a scratch directory and copy its
`portcullis-plugin-sdk/`. `src/lib.rs` is `no_std` only on wasm32
(`cfg_attr(target_arch = \"wasm32\", no_std)`), so `cargo check`, `cargo test` and
rust-analyzer work on the host toolchain.";

const C_NOTES: &str = "\
**Layout.** `plugin.c` (the rule), `portcullis.h` (the exports, the input buffer and readers of
the layout: fields, context members, attributes, `now`, `set_reason`), `build.sh` (clang),
`tests.yaml`.";

const WAT_NOTES: &str = "\
**Layout.** `__NAME__.wat` (the whole module in WebAssembly text) and `tests.yaml`. Nothing to
install: `portcullis plugin validate __NAME__.wat --out __NAME__.wasm` checks and converts it;
`plugin eval` and `plugin upload` also read `.wat` directly.";

/// Whether `name` is a plugin/project name this command accepts.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
}

/// The project's files: (relative path, contents, executable).
pub fn files(name: &str, lang: Lang) -> Vec<(String, String, bool)> {
    let krate = name.replace('-', "_");
    let (set, lang_name, build, notes) = match lang {
        Lang::Rust => (RUST, "Rust", "./build.sh", RUST_NOTES),
        Lang::C => (C, "C", "./build.sh", C_NOTES),
        Lang::Wat => (
            WAT,
            "WAT",
            "portcullis plugin validate __NAME__.wat --out __NAME__.wasm",
            WAT_NOTES,
        ),
    };
    let fill = |s: &str| s.replace("__NAME__", name).replace("__CRATE__", &krate);
    let mut v: Vec<(String, String, bool)> = set
        .iter()
        .map(|(p, text)| (fill(p), fill(text), p.ends_with(".sh")))
        .collect();
    let lang_arg = match lang {
        Lang::Rust => "rust",
        Lang::C => "c",
        Lang::Wat => "wat",
    };
    let readme = README
        .replace("__LANG_NOTES__", notes)
        .replace("__BUILD__", build)
        .replace("--lang __LANG__", &format!("--lang {lang_arg}"))
        .replace("__LANG__", lang_name);
    v.push(("README.md".into(), fill(&readme), false));
    v
}

fn write_file(dir: &Path, rel: &str, text: &str, exec: bool) -> Result<(), String> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create '{}': {e}", parent.display()))?;
    }
    std::fs::write(&p, text).map_err(|e| format!("cannot write '{}': {e}", p.display()))?;
    #[cfg(unix)]
    if exec {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make '{}' executable: {e}", p.display()))?;
    }
    #[cfg(not(unix))]
    let _ = exec;
    Ok(())
}

/// `plugin new`: writes the project; refuses a non-empty target directory.
pub fn run(a: &NewArgs) -> Result<ExitCode, String> {
    if !valid_name(&a.name) {
        return Err(format!(
            "invalid plugin name '{}': use lowercase letters, digits and '-', starting with a \
             letter (at most 64 bytes)",
            a.name
        ));
    }
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read '{}': {e}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            return Err(format!(
                "'{}' exists and is not empty; choose another --dir",
                dir.display()
            ));
        }
    }
    let files = files(&a.name, a.lang);
    for (rel, text, exec) in &files {
        write_file(&dir, rel, text, *exec)?;
    }
    let next = match a.lang {
        Lang::Rust => "./build.sh && cargo test",
        Lang::C => "./build.sh",
        Lang::Wat => "portcullis plugin validate NAME.wat --out NAME.wasm",
    }
    .replace("NAME", &a.name);
    out(&format!(
        "wrote {} files into {}; next: cd {} && {next} && portcullis test tests.yaml (README.md has the rest)",
        files.len(),
        dir.display(),
        dir.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["mw", "maintenance-window", "a1", "x-2-y"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "1a", "A", "a_b", "a.b", "a-", "../x", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn templates_are_filled() {
        for lang in [Lang::Rust, Lang::C, Lang::Wat] {
            for (path, text, _) in files("mw-rule", lang) {
                assert!(!path.contains("__"), "{path}");
                assert!(
                    !text.contains("__NAME__") && !text.contains("__CRATE__"),
                    "{path}"
                );
                assert!(!text.contains("__LANG"), "{path}");
                assert!(!text.contains("__BUILD__"), "{path}");
            }
        }
        let rust = files("mw-rule", Lang::Rust);
        let build = &rust.iter().find(|f| f.0 == "build.sh").unwrap().1;
        assert!(
            build.contains("release/mw_rule.wasm mw-rule.wasm"),
            "{build}"
        );
    }
}
