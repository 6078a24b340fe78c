//! Every crate's modules import only downward: the graph of which source file refers to which
//! other module of its crate (through `use` and through paths in code) has no cycle, so the
//! files stack into floors where each one uses only floors below it, and no module reaches back
//! up to its crate root. A change that makes a module reach back up (a store that calls the
//! error layer, a service helper that a lower module borrows) fails here, and the message names
//! the cycle. (Between crates, cargo already refuses cycles.)
//!
//! `mod` declarations are not imports (a parent declares its children), and nor are doc
//! comments. Unit-test modules (`#[cfg(test)] mod tests`) are part of their file: a test that
//! reaches up is an upward import too.
//!
//! `cargo test -p ocx-e2e --test it layers -- --nocapture` prints each crate's floors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, `["store", "sqlite", "calls"]`; the crate root is `[]`.
type Module = Vec<String>;

/// Every `.rs` file under `src`, with its module path. The root is `lib.rs`; in a crate with a
/// library, `main.rs` is a binary of its own (one file) and is left out; in a binary-only crate
/// `main.rs` is the root.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let has_lib = src.join("lib.rs").exists();
    fn walk(dir: &Path, prefix: &Module, has_lib: bool, out: &mut BTreeMap<Module, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read src")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("file name")
                .to_owned();
            if path.is_dir() {
                let mut m = prefix.clone();
                m.push(name);
                walk(&path, &m, has_lib, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "lib" | "mod" => prefix.clone(),
                    "main" if prefix.is_empty() && has_lib => continue,
                    "main" if prefix.is_empty() => prefix.clone(),
                    _ => {
                        let mut m = prefix.clone();
                        m.push(name);
                        m
                    }
                };
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &Vec::new(), has_lib, &mut out);
    out
}

/// The source without comments and string literals (a path in prose or in SQL is no import).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal such as '"' or '{' (but not a lifetime such as 'a).
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let quoted = rest.chars().nth(1) == Some('\'')
                    || (rest.starts_with('\\') && rest.chars().nth(2) == Some('\''));
                if quoted {
                    let skip = if rest.starts_with('\\') { 3 } else { 2 };
                    for _ in 0..skip {
                        chars.next();
                    }
                    out.push_str("' '");
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The paths a file's code names, each as written from its first segment (`crate`, `super`,
/// `self`): the paths of `use` trees expanded (`use crate::{a, b::c}` gives `crate::a` and
/// `crate::b::c`) and the paths in expressions and types.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // `use` trees.
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let after = &rest[at + 4..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = after.find(';') else { break };
        // ` as ` becomes `@` before white space goes, so a rename stays apart from its path.
        let tree: String = after[..end]
            .replace(" as ", "@")
            .split_whitespace()
            .collect();
        expand(&tree, &mut Vec::new(), &mut out);
    }
    // Paths in code: `crate::x::y`, `super::x`, `self::x`, and `name::x` (a child module's
    // name, or anything else: `resolve` keeps only what names a module).
    let chars: Vec<char> = code.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(ident(chars[i - 1]) || chars[i - 1] == ':');
        if !boundary || !ident(chars[i]) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && (ident(chars[j]) || chars[j] == ':') {
            j += 1;
        }
        let path: String = chars[i..j].iter().collect();
        // `crate::{...}` and the like are `use` trees, read above.
        let segments: Vec<String> = path
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if path.contains("::") && segments.len() > 1 {
            out.push(segments);
        }
        i = j;
    }
    out
}

/// The file's code split into the module's own code and its inline modules (`mod tests {
/// ... }`), each with its name: paths inside an inline module are relative to it (its `super`
/// is the file's module).
fn inline_modules(code: &str) -> (String, Vec<(String, String)>) {
    let mut own = String::new();
    let mut inner = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("mod ") {
        let before = rest[..at].chars().last();
        let after = &rest[at + 4..];
        let ident: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let tail = after[ident.len()..].trim_start();
        let word_start = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !word_start || ident.is_empty() || !tail.starts_with('{') {
            own.push_str(&rest[..at + 4]);
            rest = after;
            continue;
        }
        own.push_str(&rest[..at]);
        let open = rest.len() - tail.len();
        let mut level = 0;
        let mut close = rest.len();
        for (k, c) in rest[open..].char_indices() {
            match c {
                '{' => level += 1,
                '}' => {
                    level -= 1;
                    if level == 0 {
                        close = open + k;
                        break;
                    }
                }
                _ => {}
            }
        }
        inner.push((ident, rest[open + 1..close].to_owned()));
        rest = &rest[(close + 1).min(rest.len())..];
    }
    own.push_str(rest);
    (own, inner)
}

/// Expands one `use` tree (white space removed) under `prefix`.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let depth = prefix.len();
        prefix.extend(head);
        let mut level = 0;
        let mut start = 0;
        for (k, c) in inner.char_indices() {
            match c {
                '{' => level += 1,
                '}' => level -= 1,
                ',' if level == 0 => {
                    expand(&inner[start..k], prefix, out);
                    start = k + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], prefix, out);
        prefix.truncate(depth);
    } else if !tree.is_empty() {
        let mut path = prefix.clone();
        let leaf = tree.split('@').next().unwrap_or(tree);
        path.extend(
            leaf.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        out.push(path);
    }
}

/// The module `path` (written in `from`) names: its `crate`/`super`/`self` resolved, then the
/// longest prefix that is a module of `known`. `None` for other crates' paths.
fn resolve(from: &Module, path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let mut segments = path.iter().peekable();
    // The module whose children `super`/`self` paths start from.
    let mut base: Module = match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segments.next();
            Vec::new()
        }
        Some("self") | Some("super") => from.clone(),
        // A path from a child module's name (`actor::Writer` in `sqlite/mod.rs`).
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_owned());
            if !known.contains(&child) {
                return None;
            }
            from.clone()
        }
        None => return None,
    };
    while let Some(s) = segments.peek().map(|s| s.as_str()) {
        match s {
            "self" => {
                segments.next();
            }
            "super" => {
                segments.next();
                base.pop();
            }
            _ => break,
        }
    }
    let mut found = base.clone();
    let mut candidate = base;
    for s in segments {
        candidate.push(s.clone());
        if known.contains(&candidate) {
            found = candidate.clone();
        } else {
            break;
        }
    }
    Some(found)
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate root".into()
    } else {
        m.join("::")
    }
}

/// The floors of the crate whose sources are in `src` (module → floor, 0 at the bottom), or
/// what is wrong: a cycle, or modules that import the crate root.
fn floors(src: &Path) -> Result<BTreeMap<Module, usize>, String> {
    let files = modules(src);
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("read");
        let (own, inline) = inline_modules(&code(&text));
        let targets = edges.entry(module.clone()).or_default();
        let mut scopes = vec![(module.clone(), own)];
        for (ident, block) in inline {
            let mut inner = module.clone();
            inner.push(ident);
            scopes.push((inner, block));
        }
        for (scope, code) in scopes {
            for p in paths(&code) {
                if let Some(to) = resolve(&scope, &p, &known)
                    && &to != module
                {
                    targets.insert(to);
                }
            }
        }
    }

    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(name).collect();
        return Err(format!(
            "modules import each other (a cycle: one of them imports upward): {}",
            names.join(" -> ")
        ));
    }
    // The crate root (`run`, `Config`) serves the modules; none of them may reach back up to it.
    let root: Module = Vec::new();
    let up: Vec<String> = edges
        .iter()
        .filter(|(m, uses)| !m.is_empty() && uses.contains(&root))
        .map(|(m, _)| name(m))
        .collect();
    if !up.is_empty() {
        return Err(format!("modules that import the crate root: {up:?}"));
    }
    // A folder counts as one module too: `store/rules.rs` importing `error`, which imports
    // `store`, is a cycle between `store` and `error`, though no two files import each other.
    let depth = edges.keys().map(Vec::len).max().unwrap_or(0);
    for d in 1..depth {
        let group = |m: &Module| m[..m.len().min(d)].to_vec();
        let mut grouped: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (m, uses) in &edges {
            let from = group(m);
            let targets = grouped.entry(from.clone()).or_default();
            for u in uses {
                let to = group(u);
                if to != from {
                    targets.insert(to);
                }
            }
        }
        if let Some(cycle) = find_cycle(&grouped) {
            let names: Vec<String> = cycle.iter().map(name).collect();
            return Err(format!(
                "folders import each other (a module inside one imports upward): {}",
                names.join(" -> ")
            ));
        }
    }
    // Floors from the bottom: a module's floor is one above the highest it uses (there is no
    // cycle, so every module gets one).
    let mut floor: BTreeMap<Module, usize> = BTreeMap::new();
    while floor.len() < edges.len() {
        for (m, uses) in &edges {
            if !floor.contains_key(m) && uses.iter().all(|u| floor.contains_key(u)) {
                let f = uses.iter().map(|u| floor[u] + 1).max().unwrap_or(0);
                floor.insert(m.clone(), f);
            }
        }
    }
    Ok(floor)
}

/// A cycle of `edges`, if it has one (depth-first search).
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.clone());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.clone());
        for u in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(u, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.clone());
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// Each crate's sources, from the workspace root.
const CRATES: &[(&str, &str)] = &[
    ("ocx-api", "src"),
    ("ocx-sample", "sample/src"),
    ("ocx-server", "server/src"),
    ("ocx-client", "client-sdk/src"),
    ("ocx-cli", "cli/src"),
    ("ocx-testkit", "testkit/src"),
    ("ocx-bench", "bench/src"),
];

#[test]
fn every_crate_imports_only_downward() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    for (krate, dir) in CRATES {
        match floors(&root.join(dir)) {
            Ok(floor) => {
                let top = floor.values().copied().max().unwrap_or(0);
                println!("{krate}:");
                for f in (0..=top).rev() {
                    let here: Vec<String> = floor
                        .iter()
                        .filter(|(_, v)| **v == f)
                        .map(|(m, _)| name(m))
                        .collect();
                    println!("  floor {f:2}: {}", here.join(", "));
                }
            }
            Err(problem) => problems.push(format!("{krate}: {problem}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let server = floors(&root.join("server/src")).expect("checked above");
    assert!(server.len() > 40, "the walk found the server's files");
}

#[test]
fn the_check_finds_a_file_cycle_a_folder_cycle_and_an_import_of_the_root() {
    let crate_with = |files: &[(&str, &str)]| {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    };
    let lib = ("lib.rs", "pub mod error; pub mod store; pub fn run() {}");
    let store = ("store/mod.rs", "pub mod rules; pub struct Y;");
    // Fine: error uses store, store's files use nothing above.
    let ok = crate_with(&[
        lib,
        store,
        ("store/rules.rs", ""),
        ("error.rs", "use crate::store::Y;"),
    ]);
    assert!(floors(ok.path()).is_ok());
    // store/rules.rs -> error -> store: no two files import each other, the folders do.
    let folder = crate_with(&[
        lib,
        store,
        ("store/rules.rs", "fn f() { crate::error::g(); }"),
        ("error.rs", "use crate::store::Y; pub fn g() {}"),
    ]);
    let problem = floors(folder.path()).expect_err("a folder cycle");
    assert!(problem.contains("folders import each other"), "{problem}");
    // Two files that import each other.
    let files = crate_with(&[
        lib,
        store,
        ("store/rules.rs", "use crate::error::g;"),
        ("error.rs", "use crate::store::rules::h;"),
    ]);
    let problem = floors(files.path()).expect_err("a file cycle");
    assert!(problem.contains("cycle"), "{problem}");
    // A module that reaches back up to the root.
    let root = crate_with(&[
        lib,
        store,
        ("store/rules.rs", ""),
        ("error.rs", "fn f() { crate::run(); }"),
    ]);
    let problem = floors(root.path()).expect_err("an import of the root");
    assert!(problem.contains("crate root"), "{problem}");
}

#[test]
fn an_inline_test_module_is_read_relative_to_itself() {
    let (own, inner) = inline_modules("use crate::a; mod tests { use super::*; } fn f() {}");
    assert!(own.contains("use crate::a;") && own.contains("fn f()"));
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].0, "tests");
    let known: BTreeSet<Module> = [vec!["x".to_owned()]].into_iter().collect();
    let from = vec!["x".to_owned(), "tests".to_owned()];
    let path = vec!["super".to_owned(), "*".to_owned()];
    assert_eq!(resolve(&from, &path, &known), Some(vec!["x".to_owned()]));
}

#[test]
fn the_import_reader_sees_use_trees_and_paths() {
    let text = r#"
        use crate::{a, b::{c, d as e}};
        use super::f;
        // use crate::commented;
        fn g() { crate::h::i(); let s = "crate::in_a_string"; super::super::j(); child::k(); }
    "#;
    let found = paths(&code(text));
    let as_text: BTreeSet<String> = found.iter().map(|p| p.join("::")).collect();
    for expected in [
        "crate::a",
        "crate::b::c",
        "crate::b::d",
        "super::f",
        "crate::h::i",
        "super::super::j",
        "child::k",
    ] {
        assert!(as_text.contains(expected), "{expected} in {as_text:?}");
    }
    assert!(!as_text.iter().any(|p| p.contains("commented")));
    assert!(!as_text.iter().any(|p| p.contains("in_a_string")));
}
