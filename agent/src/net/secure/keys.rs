//! The cluster's credentials: made by `keygen` (a secret every member
//! shares, a key pair per host, the members' public keys), read back by
//! each agent, refused when anyone but root could change them.

use super::*;

/// A problem with the cluster's credentials or a peer's proof.
#[derive(Debug, Error)]
pub enum AuthError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A secret file others can read.
    #[error("{path} is readable by others (mode {mode:o}); chmod 600 it")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A credentials file or directory another user could change.
    #[error(
        "{path} can be changed by a user other than root and this agent (mode {mode:o}, owner \
         uid {uid}); chmod go-w and chown it"
    )]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// Its owner.
        uid: u32,
    },
    /// A file that does not hold what it should.
    #[error("{path}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Bad arguments to `keygen`.
    #[error("{0}")]
    Usage(String),
    /// The Noise library refused.
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
}

/// What this agent needs to join its cluster.
pub struct Credentials {
    pub(super) private: [u8; 32],
    pub(super) psk: [u8; 32],
    pub(super) hosts: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.hosts.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "Credentials {{ hosts: {names:?} }}")
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub(super) fn valid_host_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Refuses `path` if a user other than root and this agent's could write
/// it: whoever can change the cluster's keys or its `hosts` can join it.
pub(super) fn check_unwritable(path: &Path) -> Result<fs::Metadata, AuthError> {
    use std::os::unix::fs::MetadataExt;
    let file = |source| AuthError::File {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(file)?;
    let me = fs::metadata("/proc/self").map_err(file)?.uid();
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != me) {
        return Err(AuthError::Writable {
            path: path.to_path_buf(),
            mode,
            uid: meta.uid(),
        });
    }
    Ok(meta)
}

pub(super) fn read_secret(path: &Path) -> Result<[u8; 32], AuthError> {
    let file = |source| AuthError::File {
        path: path.to_path_buf(),
        source,
    };
    let meta = check_unwritable(path)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(file)?;
    unhex32(&text).ok_or_else(|| AuthError::Malformed {
        path: path.to_path_buf(),
        why: "expected 64 hex digits".into(),
    })
}

/// Writes a new file at `path` whole or not at all: into a temporary file
/// beside it, synced, then linked at `path` (which must not exist: never
/// overwritten) and the directory synced.
pub(super) fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), AuthError> {
    let err = |source| AuthError::File {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    written.map_err(err)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

/// `migrate-agent keygen DIR --hosts a,b,...`: writes a new cluster's
/// credentials into `dir` (created if needed; existing credentials are
/// never overwritten).
pub fn keygen(dir: &Path, hosts: &[String]) -> Result<(), AuthError> {
    if hosts.is_empty() {
        return Err(AuthError::Usage(
            "give the cluster's hosts: --hosts host1,host2".into(),
        ));
    }
    for (i, h) in hosts.iter().enumerate() {
        if !valid_host_name(h) {
            return Err(AuthError::Usage(format!(
                "{h:?} is not a host name (letters, digits, '.', '-', '_')"
            )));
        }
        if hosts[..i].contains(h) {
            return Err(AuthError::Usage(format!("{h} is listed twice")));
        }
    }
    fs::create_dir_all(dir).map_err(|source| AuthError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let cluster = dir.join("cluster.key");
    if cluster.exists() {
        return Err(AuthError::Usage(format!(
            "{} exists: {} already holds a cluster's credentials",
            cluster.display(),
            dir.display()
        )));
    }
    let mut psk = [0u8; 32];
    crate::host::sys::fill_random(&mut psk).map_err(|source| AuthError::File {
        path: "getrandom".into(),
        source,
    })?;
    let mut listing = String::from("# migrate cluster: host name and static public key\n");
    let mut keys = Vec::new();
    for h in hosts {
        let kp = builder().generate_keypair()?;
        listing.push_str(&format!("{h} {}\n", hex(&kp.public)));
        keys.push((h, kp.private));
    }
    write_new(&cluster, &format!("{}\n", hex(&psk)), 0o600)?;
    write_new(&dir.join("hosts"), &listing, 0o644)?;
    for (h, private) in keys {
        write_new(
            &dir.join(format!("{h}.key")),
            &format!("{}\n", hex(&private)),
            0o600,
        )?;
    }
    Ok(())
}

impl Credentials {
    /// Loads host `name`'s credentials from the cluster directory `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, AuthError> {
        check_unwritable(dir)?;
        let psk = read_secret(&dir.join("cluster.key"))?;
        let private = read_secret(&dir.join(format!("{name}.key")))?;
        let path = dir.join("hosts");
        check_unwritable(&path)?;
        let text = fs::read_to_string(&path).map_err(|source| AuthError::File {
            path: path.clone(),
            source,
        })?;
        let mut hosts = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(h), Some(k), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(AuthError::Malformed {
                    path,
                    why: format!("line {}: expected NAME PUBLIC-KEY", n + 1),
                });
            };
            let Some(key) = unhex32(k).filter(|_| valid_host_name(h)) else {
                return Err(AuthError::Malformed {
                    path,
                    why: format!("line {}: bad name or key", n + 1),
                });
            };
            hosts.push((h.to_string(), key));
        }
        if !hosts.iter().any(|(h, _)| h == name) {
            return Err(AuthError::Malformed {
                path,
                why: format!("host {name} is not listed"),
            });
        }
        Ok(Credentials {
            private,
            psk,
            hosts,
        })
    }

    pub(super) fn host_of(&self, key: &[u8]) -> Option<&str> {
        self.hosts
            .iter()
            .find(|(_, k)| k.as_slice() == key)
            .map(|(h, _)| h.as_str())
    }
}
