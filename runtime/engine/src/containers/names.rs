//! Container names: validation, Docker-style generation and atomic
//! reservation (one file per name, created with O_EXCL).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use super::error::ContainerError;
use super::store;

const ADJECTIVES: &[&str] = &[
    "admiring",
    "affectionate",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "beautiful",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "confident",
    "cool",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "great",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "interesting",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "recursing",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const NOUNS: &[&str] = &[
    "albattani",
    "allen",
    "archimedes",
    "ardinghelli",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bell",
    "bhabha",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "brahmagupta",
    "brown",
    "carson",
    "cerf",
    "chandrasekhar",
    "clarke",
    "curie",
    "darwin",
    "dijkstra",
    "dubinsky",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gates",
    "goldberg",
    "goldstine",
    "goodall",
    "haibt",
    "hamilton",
    "hawking",
    "heisenberg",
    "hermann",
    "hodgkin",
    "hoover",
    "hopper",
    "hypatia",
    "jackson",
    "jang",
    "jennings",
    "johnson",
    "kalam",
    "kepler",
    "khorana",
    "knuth",
    "lalande",
    "lamarr",
    "leakey",
    "lovelace",
    "lumiere",
    "mahavira",
    "mayer",
    "mccarthy",
    "mcclintock",
    "meitner",
    "mendel",
    "merkle",
    "mirzakhani",
    "montalcini",
    "moore",
    "morse",
    "napier",
    "nash",
    "newton",
    "nobel",
    "noether",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "ritchie",
    "rosalind",
    "sammet",
    "shannon",
    "shirley",
    "sinoussi",
    "stonebraker",
    "swanson",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "visvesvaraya",
    "wescoff",
    "williams",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "yalow",
    "yonath",
];

/// Strips one leading `/` and checks `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn normalize(name: &str) -> Result<String, ContainerError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let ok = bare.len() >= 2
        && bare.len() <= 253
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(bare.to_string())
    } else {
        Err(ContainerError::InvalidParameter(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// `adjective_noun`, with a digit appended on retries like Docker.
pub fn generate(retry: u32) -> String {
    let a = ADJECTIVES[store::random_below(ADJECTIVES.len())];
    let n = NOUNS[store::random_below(NOUNS.len())];
    if retry == 0 {
        format!("{a}_{n}")
    } else {
        format!("{a}_{n}{}", store::random_below(10))
    }
}

/// The reservation files under `<root>/names`.
#[derive(Debug, Clone)]
pub struct Names {
    dir: PathBuf,
}

impl Names {
    pub fn open(dir: PathBuf) -> Result<Self, ContainerError> {
        fs::create_dir_all(&dir)
            .map_err(ContainerError::io(format!("creating {}", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, bare: &str) -> PathBuf {
        self.dir.join(bare)
    }

    /// Atomically reserves `bare` for `id`; a name taken by another
    /// container is a [`ContainerError::NameConflict`].
    pub fn reserve(&self, bare: &str, id: &str) -> Result<(), ContainerError> {
        let path = self.path(bare);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(id.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(ContainerError::io(format!("writing {}", path.display())))?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = self.owner(bare).unwrap_or_default();
                if owner == id {
                    return Ok(());
                }
                Err(ContainerError::NameConflict(format!("/{bare}"), owner))
            }
            Err(e) => Err(ContainerError::io(format!("creating {}", path.display()))(
                e,
            )),
        }
    }

    /// The id holding `bare`, if any. A reservation being written (empty
    /// file) reads as an empty id.
    pub fn owner(&self, bare: &str) -> Option<String> {
        fs::read_to_string(self.path(bare)).ok()
    }

    /// Releases `bare` if `id` holds it.
    pub fn release(&self, bare: &str, id: &str) {
        if self.owner(bare).as_deref() == Some(id) {
            let _ = fs::remove_file(self.path(bare));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(normalize("/web").ok().as_deref(), Some("web"));
        assert!(normalize("a").is_err());
        assert!(normalize("-ab").is_err());
        assert!(normalize("a/b").is_err());
        assert!(normalize("ok_name.1-2").is_ok());
        assert!(normalize(&generate(0)).is_ok());
        assert!(normalize(&generate(3)).is_ok());
    }
}
