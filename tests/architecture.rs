//! The dependency rules of ARCHITECTURE.md, checked on the source text of `src/`.
//!
//! Every top-level module belongs to one layer; a layer may import only the
//! layers its rule names, and only some layers may use the HTTP framework
//! (`actix*` crates) or the metrics and OpenTelemetry APIs. Paths are read from
//! code only (comments, doc comments and string literals are blanked first):
//! `crate::x`, `crate::{x, y}`, `super::` chains that climb out of a module, and
//! external crate paths. A break is reported with its file, line and rule. The
//! few known breaks are listed once, in [`KNOWN_EXCEPTIONS`], each with its
//! reason; an entry that no longer matches anything fails the test too, so the
//! list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers of the crate, from the bottom up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// Shared vocabulary, importable by every module; imports only the kernel.
    Kernel,
    /// Logs, traces and metrics: the one user of the metrics and OpenTelemetry
    /// APIs; imports only the kernel.
    Telemetry,
    /// One concern of the pipeline each; imports only the kernel and telemetry.
    Capability,
    /// The pipeline and its error type: may import capabilities.
    Pipeline,
    /// Typed settings: gathers each capability's settings struct.
    Config,
    /// The connections under the application; knows nothing of the broker.
    Server,
    /// The HTTP edge: reaches the capabilities through the pipeline only.
    Edge,
    /// The composition root: builds everything.
    Startup,
    /// The command line and the binary.
    Command,
}

/// Every top-level module of `src/` and its layer. A module missing here fails the test.
const LAYERS: &[(&str, Layer)] = &[
    ("domain", Layer::Kernel),
    ("clock", Layer::Kernel),
    ("redis_link", Layer::Kernel),
    ("file_watch", Layer::Kernel),
    ("tls", Layer::Kernel),
    ("telemetry", Layer::Telemetry),
    ("auth", Layer::Capability),
    ("policy", Layer::Capability),
    ("quota", Layer::Capability),
    ("cache", Layer::Capability),
    ("upstream", Layer::Capability),
    ("audit", Layer::Capability),
    ("alerts", Layer::Capability),
    ("simulator", Layer::Capability),
    ("broker", Layer::Pipeline),
    ("error", Layer::Pipeline),
    ("config", Layer::Config),
    ("server", Layer::Server),
    ("routes", Layer::Edge),
    ("startup", Layer::Startup),
    ("production", Layer::Startup),
    ("cli", Layer::Command),
    ("main", Layer::Command),
    ("lib", Layer::Command),
];

impl Layer {
    /// The layers this one may import (its own layer included where named).
    fn may_import(self) -> &'static [Layer] {
        use Layer::*;
        match self {
            Kernel => &[Kernel],
            Telemetry => &[Kernel],
            Capability => &[Kernel, Telemetry],
            Pipeline => &[Kernel, Telemetry, Capability, Pipeline],
            Config => &[Kernel, Telemetry, Capability],
            Server => &[Kernel, Telemetry],
            Edge => &[Kernel, Telemetry, Pipeline],
            Startup => &[
                Kernel, Telemetry, Capability, Pipeline, Config, Server, Edge, Startup,
            ],
            Command => &[
                Kernel, Telemetry, Capability, Pipeline, Config, Server, Edge, Startup, Command,
            ],
        }
    }

    /// The rule, as ARCHITECTURE.md states it.
    fn rule(self) -> &'static str {
        match self {
            Layer::Kernel => "the kernel (domain, clock, redis_link, tls) imports only the kernel",
            Layer::Telemetry => "telemetry imports only the kernel",
            Layer::Capability => {
                "a capability module imports only the kernel and telemetry: never another capability, config, startup, routes, server, broker or error"
            }
            Layer::Pipeline => {
                "broker and error import capabilities, the kernel and telemetry: never config, server, routes, startup or cli"
            }
            Layer::Config => {
                "config imports the capabilities' settings, the kernel and telemetry: never broker, server, routes or startup"
            }
            Layer::Server => "server imports only the kernel and telemetry",
            Layer::Edge => {
                "routes reach the capabilities through broker and error only: never a capability, config, server or startup"
            }
            Layer::Startup => "startup imports everything but cli and main",
            Layer::Command => "cli, main and lib (the module list) import anything",
        }
    }

    /// Whether this layer may use the HTTP framework (`actix*` crates).
    fn may_use_actix(self) -> bool {
        matches!(
            self,
            Layer::Server | Layer::Edge | Layer::Startup | Layer::Command
        )
    }

    /// Whether this layer may use the metrics and OpenTelemetry APIs.
    fn may_use_telemetry_apis(self) -> bool {
        self == Layer::Telemetry
    }
}

/// Exceptions by design: each file may import the target named, always.
const BY_DESIGN: &[(&str, &str, &str)] = &[
    (
        "src/upstream/embedded.rs",
        "simulator",
        "the embedded connector answers from the simulator's dataset",
    ),
    (
        "src/simulator/server.rs",
        "actix_web",
        "the simulator's standalone server is a CAF stand-in, not a stage of the pipeline",
    ),
];

/// Known breaks of the rules, to be removed: (file, imported target, reason).
/// Each is listed in ARCHITECTURE.md under "Known exceptions".
const KNOWN_EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "src/routes/openapi.rs",
    "quota",
    "a test of the OpenAPI document builds a quota refusal from `quota::Window`",
)];

/// The external crates reserved to some layers.
fn reserved_crate(name: &str) -> Option<&'static str> {
    if name.starts_with("actix") {
        Some("actix")
    } else if name == "metrics"
        || name.starts_with("metrics_exporter")
        || name.starts_with("opentelemetry")
        || name == "tracing_opentelemetry"
    {
        Some("telemetry-api")
    } else {
        None
    }
}

/// One import found in a file: its line and what it names (a top-level module
/// of the crate, or an external crate).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    line: usize,
    target: String,
    external: bool,
}

/// A broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    target: String,
    message: String,
}

fn layer_of(module: &str) -> Option<Layer> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

/// The module path of a file under `src/`: `src/policy/drift.rs` is
/// `["policy", "drift"]`, `src/policy/mod.rs` is `["policy"]`.
fn module_path(file: &str) -> Vec<String> {
    let inner = file.strip_prefix("src/").unwrap_or(file);
    let inner = inner.strip_suffix(".rs").unwrap_or(inner);
    inner
        .split('/')
        .filter(|segment| *segment != "mod")
        .map(str::to_owned)
        .collect()
}

/// `source` with comments, string literals and char literals replaced by
/// spaces (newlines kept, so line numbers hold).
fn blank_non_code(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"...", r#"..."#, br"...": no escapes inside.
            let open = chars[i..].iter().position(|&c| c == '"').unwrap_or(0) + 1;
            for &c in &chars[i..i + open] {
                blank(&mut out, c);
            }
            i += open;
            while i < chars.len() {
                let closes =
                    chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#'));
                if closes {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}'), or a lifetime ('a) left as is.
            let end = if next == Some('\\') {
                chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&c| c == '\''))
                    .map(|p| i + 3 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The number of `#` of a raw string opening at `i` (`r"`, `r#"`, `br"`), if one does.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let previous_is_ident = i > 0 && is_ident_char(chars[i - 1]);
    if previous_is_ident {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(hashes)
}

/// Keywords that may stand before a path written with a leading `::`.
const KEYWORDS: &[&str] = &[
    "use", "pub", "as", "in", "return", "let", "mut", "ref", "if", "match", "else", "move", "impl",
    "dyn", "for", "where", "break", "yield",
];

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other(char),
}

/// The tokens of blanked code, each with its line.
fn tokens(code: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if is_ident_char(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push((line, Token::Ident(word)));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push((line, Token::PathSep));
            i += 2;
        } else {
            out.push((
                line,
                match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    other => Token::Other(other),
                },
            ));
            i += 1;
        }
    }
    out
}

fn ident(token: Option<&(usize, Token)>) -> Option<&str> {
    match token {
        Some((_, Token::Ident(word))) => Some(word),
        _ => None,
    }
}

/// The first segment of each item of a `{a::b, c, d::{e}}` group starting at
/// `open` (the index of `{`), with the index after the closing brace.
fn group_heads(tokens: &[(usize, Token)], open: usize) -> (Vec<(usize, String)>, usize) {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut i = open;
    while i < tokens.len() {
        match &tokens[i].1 {
            Token::Open => {
                depth += 1;
                expect_head = depth == 1;
            }
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return (heads, i + 1);
                }
            }
            Token::Comma if depth == 1 => expect_head = true,
            Token::Ident(word) if expect_head && depth == 1 => {
                heads.push((tokens[i].0, word.clone()));
                expect_head = false;
            }
            _ => {}
        }
        i += 1;
    }
    (heads, i)
}

/// The imports of one file: crate modules named through `crate::` or through
/// `super::` chains that climb to the crate root, and reserved external crates.
fn imports_of(file_path: &[String], source: &str) -> Vec<Import> {
    let code = blank_non_code(source);
    let tokens = tokens(&code);
    // Modules declared here shadow external crates of the same name (`routes::metrics`).
    let local_mods: BTreeSet<&str> = tokens
        .windows(2)
        .filter_map(|pair| match pair {
            [(_, Token::Ident(m)), (_, Token::Ident(name))] if m == "mod" => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    // Inline modules opened so far: the brace depth at which each closes.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = &tokens[i];
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline_mods.last() == Some(&depth) {
                    inline_mods.pop();
                }
            }
            Token::Ident(word)
                if word == "mod"
                    && ident(tokens.get(i + 1)).is_some()
                    && matches!(tokens.get(i + 2), Some((_, Token::Open))) =>
            {
                inline_mods.push(depth);
            }
            Token::Ident(word) => {
                let after_sep = i > 0 && tokens[i - 1].1 == Token::PathSep;
                // `a::b` continues a path; `use ::b` (a keyword before `::`) starts one.
                let continues_path = after_sep
                    && i > 1
                    && match &tokens[i - 2].1 {
                        Token::Ident(before) => !KEYWORDS.contains(&before.as_str()),
                        Token::Other('>') => true,
                        _ => false,
                    };
                let followed_by_sep = matches!(tokens.get(i + 1), Some((_, Token::PathSep)));
                if continues_path || !followed_by_sep {
                    i += 1;
                    continue;
                }
                let root = match word.as_str() {
                    "crate" | "caf_broker" => Some(i + 2),
                    "super" => {
                        // Count the chain, then see whether it leaves the crate's top level.
                        let mut supers = 0;
                        let mut j = i;
                        while ident(tokens.get(j)) == Some("super")
                            && matches!(tokens.get(j + 1), Some((_, Token::PathSep)))
                        {
                            supers += 1;
                            j += 2;
                        }
                        let here = file_path.len() + inline_mods.len();
                        // `mod.rs` and top-level files: their `super` is one level up.
                        let levels = here - 1;
                        if supers > levels {
                            Some(j)
                        } else {
                            i = j;
                            continue;
                        }
                    }
                    name => {
                        if reserved_crate(name).is_some() && !local_mods.contains(name) {
                            out.push(Import {
                                line: *line,
                                target: name.to_owned(),
                                external: true,
                            });
                        }
                        None
                    }
                };
                if let Some(root) = root {
                    match tokens.get(root) {
                        Some((line, Token::Ident(target))) => out.push(Import {
                            line: *line,
                            target: target.clone(),
                            external: false,
                        }),
                        Some((_, Token::Open)) => {
                            let (heads, end) = group_heads(&tokens, root);
                            out.extend(heads.into_iter().map(|(line, target)| Import {
                                line,
                                target,
                                external: false,
                            }));
                            i = end;
                            continue;
                        }
                        _ => {}
                    }
                    i = root;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.retain(|import| import.target != "self");
    out
}

/// The rules broken by one file, given its path under the crate root and its text.
fn check_file(file: &str, source: &str) -> Vec<Violation> {
    check_module(file, &module_path(file), source)
}

/// As [`check_file`], for a file whose module path is `path` (`#[path]` files).
fn check_module(file: &str, path: &[String], source: &str) -> Vec<Violation> {
    let module = path.first().cloned().unwrap_or_default();
    let Some(layer) = layer_of(&module) else {
        return vec![Violation {
            file: file.to_owned(),
            line: 1,
            target: module.clone(),
            message: format!(
                "{file}:1: module `{module}` has no layer: place it in ARCHITECTURE.md and in LAYERS of tests/architecture.rs"
            ),
        }];
    };
    let by_design = |target: &str| BY_DESIGN.iter().any(|(f, t, _)| *f == file && *t == target);
    let mut out = Vec::new();
    for import in imports_of(path, source) {
        if by_design(&import.target) {
            continue;
        }
        let broken = if import.external {
            match reserved_crate(&import.target) {
                Some("actix") if !layer.may_use_actix() => Some(format!(
                    "only server, routes, startup, cli and main use the HTTP framework (`{}`)",
                    import.target
                )),
                Some("telemetry-api") if !layer.may_use_telemetry_apis() => Some(format!(
                    "only telemetry touches the metrics and OpenTelemetry APIs (`{}`): call a telemetry helper",
                    import.target
                )),
                _ => None,
            }
        } else if import.target == module {
            None
        } else if import.target == "startup" && !matches!(layer, Layer::Startup | Layer::Command) {
            Some("only startup, cli, main and tests import startup".to_owned())
        } else {
            match layer_of(&import.target) {
                Some(target) if layer.may_import().contains(&target) => None,
                Some(_) => Some(layer.rule().to_owned()),
                None => Some(format!(
                    "`crate::{}` is not a module of the crate",
                    import.target
                )),
            }
        };
        if let Some(rule) = broken {
            out.push(Violation {
                file: file.to_owned(),
                line: import.line,
                target: import.target.clone(),
                message: format!(
                    "{file}:{}: `{module}` imports `{}`: {rule}",
                    import.line, import.target
                ),
            });
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The files declared with `#[path = "x.rs"] mod name;` in `file`, each with
/// its module path (the declaring file's, then `name`).
fn path_attributes(file: &str, source: &str) -> Vec<(String, Vec<String>)> {
    let dir = file.rsplit_once('/').map_or("", |(dir, _)| dir);
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|pair| {
            let target = pair[0].strip_prefix("#[path = \"")?.strip_suffix("\"]")?;
            let name = pair[1]
                .trim_start_matches("pub ")
                .strip_prefix("mod ")?
                .strip_suffix(';')?;
            let mut path = module_path(file);
            path.push(name.to_owned());
            Some((format!("{dir}/{target}"), path))
        })
        .collect()
}

/// Every violation in `src/`, before the known exceptions are taken out.
fn violations_in_src() -> Vec<Violation> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    assert!(paths.len() > 20, "src/ has {} Rust files", paths.len());
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|path| {
            let relative = path
                .strip_prefix(root)
                .expect("under the crate root")
                .to_string_lossy()
                .replace('\\', "/");
            let source = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"));
            (relative, source)
        })
        .collect();
    let declared: Vec<(String, Vec<String>)> = files
        .iter()
        .flat_map(|(file, source)| path_attributes(file, source))
        .collect();
    files
        .iter()
        .flat_map(|(file, source)| {
            let module = declared
                .iter()
                .find(|(declared, _)| declared == file)
                .map_or_else(|| module_path(file), |(_, path)| path.clone());
            check_module(file, &module, source)
        })
        .collect()
}

#[test]
fn every_module_keeps_the_dependency_rules_of_architecture_md() {
    let violations = violations_in_src();
    let known = |v: &Violation| {
        KNOWN_EXCEPTIONS
            .iter()
            .any(|(file, target, _)| *file == v.file && *target == v.target)
    };
    let new: Vec<&str> = violations
        .iter()
        .filter(|v| !known(v))
        .map(|v| v.message.as_str())
        .collect();
    assert!(
        new.is_empty(),
        "dependency rules broken (see ARCHITECTURE.md, \"Dependency rules\"):\n{}",
        new.join("\n")
    );
    let stale: Vec<String> = KNOWN_EXCEPTIONS
        .iter()
        .filter(|(file, target, _)| {
            !violations
                .iter()
                .any(|v| v.file == *file && v.target == *target)
        })
        .map(|(file, target, _)| format!("{file} no longer imports `{target}`"))
        .collect();
    assert!(
        stale.is_empty(),
        "remove these entries from KNOWN_EXCEPTIONS and ARCHITECTURE.md:\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_file_of_src_belongs_to_a_module_with_a_layer() {
    let modules: BTreeSet<String> = {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        files
            .iter()
            .map(|path| {
                let relative = path.strip_prefix(&root).expect("under src/");
                let first = relative.components().next().expect("a component");
                let name = first.as_os_str().to_string_lossy();
                name.strip_suffix(".rs").unwrap_or(&name).to_owned()
            })
            .collect()
    };
    let missing: Vec<&String> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(missing.is_empty(), "modules with no layer: {missing:?}");
}

// The checker itself, on small samples: each rule can fail.

fn messages(file: &str, source: &str) -> Vec<String> {
    check_file(file, source)
        .into_iter()
        .map(|v| v.message)
        .collect()
}

#[test]
fn a_capability_importing_another_capability_is_reported_with_file_line_and_rule() {
    let found = messages(
        "src/policy/drift.rs",
        "//! Drift.\n\nuse crate::domain::Purpose;\nuse crate::quota::Window;\n",
    );
    assert_eq!(
        found,
        vec![format!(
            "src/policy/drift.rs:4: `policy` imports `quota`: {}",
            Layer::Capability.rule()
        )]
    );
}

#[test]
fn config_startup_routes_and_broker_are_out_of_reach_of_a_capability() {
    let source = "fn f() {\n    let _ = crate::config::Settings::load();\n}\nuse crate::startup::Application;\nuse crate::{routes, broker::Broker, error::BrokerError, server};\n";
    let targets: Vec<String> = check_file("src/cache.rs", source)
        .into_iter()
        .map(|v| format!("{}:{}", v.line, v.target))
        .collect();
    assert_eq!(
        targets,
        [
            "2:config",
            "4:startup",
            "5:routes",
            "5:broker",
            "5:error",
            "5:server"
        ]
    );
}

#[test]
fn actix_and_the_metrics_crate_are_reported_outside_their_layers() {
    let source = "use actix_web::HttpResponse;\nfn f() { metrics::counter!(\"x\").increment(1); }\nuse ::opentelemetry::Context;\nfn g() { crate::telemetry::metrics::x(); }\n";
    let found = messages("src/quota/fallback.rs", source);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("src/quota/fallback.rs:1: `quota` imports `actix_web`"));
    assert!(
        found[1].starts_with("src/quota/fallback.rs:2: `quota` imports `metrics`: only telemetry")
    );
    assert!(found[2].starts_with("src/quota/fallback.rs:3: `quota` imports `opentelemetry`"));
    assert!(messages("src/telemetry/metrics.rs", source).len() == 1);
    assert!(messages("src/routes/mod.rs", "use actix_web::web;\n").is_empty());
    assert!(!messages("src/broker.rs", "use actix_web::web;\n").is_empty());
}

#[test]
fn only_startup_cli_and_main_import_startup() {
    let source = "use crate::startup::Application;\n";
    assert!(messages("src/startup.rs", source).is_empty());
    assert!(messages("src/cli.rs", source).is_empty());
    assert!(messages("src/main.rs", "use caf_broker::startup::Application;\n").is_empty());
    let found = messages("src/routes/ops.rs", source);
    assert_eq!(
        found,
        [
            "src/routes/ops.rs:1: `routes` imports `startup`: only startup, cli, main and tests import startup"
        ]
    );
    assert_eq!(messages("src/broker.rs", source).len(), 1);
}

#[test]
fn the_kernel_may_be_imported_by_everyone_and_imports_only_the_kernel() {
    let kernel = "use crate::domain::Nir;\nuse crate::clock::Clock;\nuse crate::redis_link::Link;\nuse crate::tls::client;\n";
    for file in [
        "src/auth/mod.rs",
        "src/broker.rs",
        "src/routes/mod.rs",
        "src/telemetry/mod.rs",
        "src/server/mod.rs",
    ] {
        assert!(messages(file, kernel).is_empty(), "{file}");
    }
    assert_eq!(
        messages("src/domain.rs", "use crate::telemetry::names;\n"),
        [format!(
            "src/domain.rs:1: `domain` imports `telemetry`: {}",
            Layer::Kernel.rule()
        )]
    );
}

#[test]
fn comments_doc_comments_and_strings_are_not_imports() {
    let source = r##"//! See `crate::quota::Window`.
/// Unlike crate::cache::RecordCache, this is pure.
/* crate::config::Settings, /* nested crate::startup */ still a comment */
const NAME: &str = "crate::upstream::CafClient";
const RAW: &str = r#"use crate::audit::AuditLog; "quoted""#;
const BRACE: char = '{';
fn f<'a>(x: &'a str) -> &'a str { x }
use crate::domain::Purpose;
"##;
    assert!(messages("src/policy/mod.rs", source).is_empty());
    assert_eq!(
        messages(
            "src/policy/mod.rs",
            &format!("{source}use crate::audit::AuditLog;\n")
        )
        .len(),
        1
    );
}

#[test]
fn super_chains_that_climb_out_of_the_module_are_imports() {
    // From src/policy/drift.rs, `super::` is policy; from its tests, `super::super::` is policy.
    let inside =
        "use super::schema::Kind;\nmod tests {\n    use super::super::load_tests::shipped;\n}\n";
    assert!(messages("src/policy/drift.rs", inside).is_empty());
    let outside = "mod tests {\n    use super::super::super::quota::Window;\n}\nuse super::super::{config, domain};\n";
    let targets: Vec<String> = check_file("src/policy/drift.rs", outside)
        .into_iter()
        .map(|v| format!("{}:{}", v.line, v.target))
        .collect();
    assert_eq!(targets, ["2:quota", "4:config"]);
}

#[test]
fn the_allowed_exceptions_by_design_hold_for_their_file_only() {
    let source = "use crate::simulator::Dataset;\n";
    assert!(messages("src/upstream/embedded.rs", source).is_empty());
    assert_eq!(messages("src/upstream/http.rs", source).len(), 1);
    let actix = "use actix_web::{App, HttpServer};\n";
    assert!(messages("src/simulator/server.rs", actix).is_empty());
    assert_eq!(messages("src/simulator/dataset.rs", actix).len(), 1);
}

#[test]
fn a_local_module_named_like_a_reserved_crate_is_not_that_crate() {
    let source = "mod metrics;\nfn f() { metrics::metrics(); }\n";
    assert!(messages("src/routes/mod.rs", source).is_empty());
    assert_eq!(
        messages("src/routes/ops.rs", "fn f() { metrics::counter(); }\n").len(),
        1
    );
}

#[test]
fn a_file_declared_with_a_path_attribute_takes_its_declaring_module_path() {
    let declaring = "#[cfg(test)]\n#[path = \"local_tests.rs\"]\nmod tests;\n";
    assert_eq!(
        path_attributes("src/quota/local.rs", declaring),
        [(
            "src/quota/local_tests.rs".to_owned(),
            vec!["quota".to_owned(), "local".to_owned(), "tests".to_owned()]
        )]
    );
    let tests = "use super::super::Quota;\n";
    let path = ["quota", "local", "tests"].map(str::to_owned);
    assert!(check_module("src/quota/local_tests.rs", &path, tests).is_empty());
    let climbing = "use super::super::super::cache::RecordCache;\n";
    assert_eq!(
        check_module("src/quota/local_tests.rs", &path, climbing).len(),
        1
    );
}

#[test]
fn a_module_without_a_layer_is_reported() {
    assert_eq!(
        check_file("src/pem.rs", "//! PEM.\n")[0].message,
        "src/pem.rs:1: module `pem` has no layer: place it in ARCHITECTURE.md and in LAYERS of tests/architecture.rs"
    );
}
