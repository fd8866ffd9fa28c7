//! Which files of an unpacked package tree a dynamically linked program
//! loads: its ELF interpreter and the closure of its `DT_NEEDED` libraries,
//! found in the library directories as the loader would, with every symlink
//! on the way. The initramfs carries only these (glibc's package alone holds
//! megabytes that nft never maps, and the kernel copies every byte at boot).

use std::collections::BTreeSet;
use std::path::{Component, Path};

use crate::{io, GuestImageError, Result};

/// Symlinks followed from one name before the chain counts as a loop.
const MAX_LINK_HOPS: usize = 8;

/// Paths relative to `tree`, sorted: the program's interpreter and libraries
/// (files and the symlinks that lead to them), searched for in
/// `library_dirs` (relative to `tree`) in order.
pub fn runtime_files(tree: &Path, program: &str, library_dirs: &[String]) -> Result<Vec<String>> {
    let mut files = BTreeSet::new();
    let mut pending = vec![program.to_string()];
    let mut seen_libraries = BTreeSet::new();
    while let Some(object) = pending.pop() {
        let path = tree.join(&object);
        let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
        let elf = goblin::elf::Elf::parse(&bytes).map_err(|e| GuestImageError::Elf {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if let Some(interpreter) = elf.interpreter {
            let real = follow_links(tree, &relative(interpreter), &mut files)?;
            // The loader is itself an ELF file but needs nothing.
            files.insert(real);
        }
        for library in elf.libraries {
            if !seen_libraries.insert(library.to_string()) {
                continue;
            }
            let found = library_dirs
                .iter()
                .map(|dir| format!("{dir}/{library}"))
                .find(|candidate| tree.join(candidate).symlink_metadata().is_ok())
                .ok_or_else(|| GuestImageError::MissingLibrary {
                    library: library.to_string(),
                    needed_by: object.clone(),
                })?;
            let real = follow_links(tree, &found, &mut files)?;
            files.insert(real.clone());
            pending.push(real);
        }
    }
    files.remove(program);
    Ok(files.into_iter().collect())
}

/// Follows `start` through symlinks inside `tree`, recording each link in
/// `files`; returns the regular file it ends at.
fn follow_links(tree: &Path, start: &str, files: &mut BTreeSet<String>) -> Result<String> {
    let mut current = start.to_string();
    for _ in 0..MAX_LINK_HOPS {
        let path = tree.join(&current);
        let meta = path.symlink_metadata().map_err(io("reading", &path))?;
        if !meta.file_type().is_symlink() {
            return Ok(current);
        }
        files.insert(current.clone());
        let target = std::fs::read_link(&path).map_err(io("reading", &path))?;
        let base = Path::new(&current).parent().unwrap_or(Path::new(""));
        current = resolve(base, &target).ok_or_else(|| GuestImageError::Elf {
            path: path.clone(),
            detail: format!("link target {} leaves the package tree", target.display()),
        })?;
    }
    Err(GuestImageError::Elf {
        path: tree.join(start),
        detail: format!("more than {MAX_LINK_HOPS} symlinks"),
    })
}

/// `target` of a link in directory `base` (both relative to the tree root),
/// as a relative path; `None` if it climbs above the root.
fn resolve(base: &Path, target: &Path) -> Option<String> {
    let mut parts: Vec<String> = if target.is_absolute() {
        Vec::new()
    } else {
        base.iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    };
    for component in target.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

fn relative(absolute: &str) -> String {
    absolute.trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_resolve_inside_the_tree() {
        let base = Path::new("usr/lib/x86_64-linux-gnu");
        assert_eq!(
            resolve(base, Path::new("libtinfo.so.6.4")).as_deref(),
            Some("usr/lib/x86_64-linux-gnu/libtinfo.so.6.4")
        );
        assert_eq!(
            resolve(Path::new("lib64"), Path::new("/lib/x86_64-linux-gnu/ld.so")).as_deref(),
            Some("lib/x86_64-linux-gnu/ld.so")
        );
        assert_eq!(
            resolve(Path::new("lib64"), Path::new("../lib/ld.so")).as_deref(),
            Some("lib/ld.so")
        );
        assert_eq!(
            resolve(Path::new("lib64"), Path::new("../../etc/passwd")),
            None
        );
    }

    /// The host's own `ls` (dynamically linked against glibc) has an
    /// interpreter and libc among its runtime files, and nothing unrelated.
    #[test]
    fn a_host_program_needs_its_loader_and_libc() {
        let Some(ls) = ["/usr/bin/ls", "/bin/ls"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
        else {
            panic!("no ls on this host");
        };
        let multiarch = format!("lib/{}-linux-gnu", std::env::consts::ARCH);
        let dirs = vec![
            multiarch.clone(),
            format!("usr/{multiarch}"),
            "lib64".to_string(),
            "lib".to_string(),
        ];
        let files = runtime_files(Path::new("/"), ls.trim_start_matches('/'), &dirs)
            .expect("ls's runtime files");
        assert!(files.iter().any(|f| f.ends_with("/libc.so.6")), "{files:?}");
        assert!(files.iter().any(|f| f.contains("ld-linux")), "{files:?}");
        assert!(
            !files
                .iter()
                .any(|f| f.contains("libmvec") || f.contains("libBrokenLocale")),
            "{files:?}"
        );
    }
}
