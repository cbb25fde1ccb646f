//! Agent settings: command-line flags over an optional TOML file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/migrate/agent.sock";
/// Default state directory (the migration history, the received record).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/migrate";
/// Cluster credentials used when `--auth` is not given and this exists.
pub const DEFAULT_AUTH_DIR: &str = "/etc/migrate/cluster";
/// The settings file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/migrate/agent.toml";

/// Bad settings.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A peer is not `NAME=ADDR:PORT`.
    #[error("bad peer {0:?}: expected NAME=ADDR:PORT")]
    Peer(String),
    /// A setting is missing.
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// Settings that exclude each other.
    #[error("{0}")]
    Conflict(&'static str),
}

/// The settings file; every key is optional, flags override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Host name of this agent.
    pub name: Option<String>,
    /// Address for peer agents, `ADDR:PORT`.
    pub listen: Option<SocketAddr>,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// Known peers by name.
    #[serde(default)]
    pub peers: BTreeMap<String, SocketAddr>,
    /// Largest open file shipped when the destination lacks it, MiB.
    pub ship_limit_mib: Option<u64>,
    /// Most migrations this agent receives at once.
    pub max_incoming: Option<usize>,
    /// Where the agent keeps its state (the migration history).
    pub state_dir: Option<PathBuf>,
    /// Directory of the cluster's credentials (`migrate-agent keygen`).
    pub auth: Option<PathBuf>,
    /// Talk to peers in plaintext, unauthenticated.
    #[serde(default)]
    pub insecure: bool,
    /// Service addresses of this host that any user may move with a
    /// process (`migrate --move-address`); root may move any.
    #[serde(default)]
    pub hand_over: Vec<std::net::IpAddr>,
    /// What the agent logs: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`) or `RUST_LOG`'s directives.
    pub log_level: Option<String>,
    /// How it logs: `text` or `json` (one object per line).
    pub log_format: Option<LogFormat>,
    /// Where to serve Prometheus metrics (`/metrics`), `ADDR:PORT`.
    pub metrics: Option<SocketAddr>,
}

/// How the agent writes its log (to stderr, the journal under systemd).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// Values given on the command line; each overrides the file's.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--name`.
    pub name: Option<String>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--peer NAME=ADDR:PORT`, added to the file's peers.
    pub peers: Vec<String>,
    /// `--ship-limit-mib`.
    pub ship_limit_mib: Option<u64>,
    /// `--max-incoming`.
    pub max_incoming: Option<usize>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--auth DIR`.
    pub auth: Option<PathBuf>,
    /// `--insecure`.
    pub insecure: bool,
    /// `--hand-over ADDR`, added to the file's.
    pub hand_over: Vec<std::net::IpAddr>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
}

/// How the agent secures its links, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAuth {
    /// Credentials from this cluster directory.
    Cluster(PathBuf),
    /// Plaintext (`--insecure`).
    Insecure,
    /// Neither given, and no credentials at the default place.
    Unset,
}

/// Effective settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host name of this agent.
    pub name: String,
    /// Address for peer agents.
    pub listen: SocketAddr,
    /// Control socket path.
    pub socket: PathBuf,
    /// Known peers by name.
    pub peers: BTreeMap<String, SocketAddr>,
    /// Largest open file shipped when the destination lacks it (or it was
    /// deleted), MiB.
    pub ship_limit_mib: u64,
    /// Most migrations received at once; more are refused before the
    /// source freezes anything.
    pub max_incoming: usize,
    /// Where the agent keeps its state (the migration history).
    pub state_dir: PathBuf,
    /// How links to peers are secured.
    pub auth: PeerAuth,
    /// Service addresses any user may move with a process.
    pub hand_over: Vec<std::net::IpAddr>,
    /// What the agent logs (else `RUST_LOG`, else `info`).
    pub log_level: Option<String>,
    /// How it logs.
    pub log_format: LogFormat,
    /// Where it serves Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// Default of [`Config::max_incoming`].
pub const DEFAULT_MAX_INCOMING: usize = 8;

/// Default of [`Config::ship_limit_mib`].
pub const DEFAULT_SHIP_LIMIT_MIB: u64 = 64;

/// The settings file to read: the one given, else `default` if it exists.
pub fn settings_file(given: Option<PathBuf>, default: &Path) -> Option<PathBuf> {
    given.or_else(|| default.is_file().then(|| default.to_path_buf()))
}

/// Where `to` is: the address of the peer of that name, else `to` itself
/// read as ADDR:PORT.
pub fn resolve_peer(peers: &BTreeMap<String, SocketAddr>, to: &str) -> Option<SocketAddr> {
    peers.get(to).copied().or_else(|| to.parse().ok())
}

/// Parses `NAME=ADDR:PORT`.
pub fn parse_peer(s: &str) -> Result<(String, SocketAddr), ConfigError> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| ConfigError::Peer(s.into()))?;
    let addr = addr.parse().map_err(|_| ConfigError::Peer(s.into()))?;
    if name.is_empty() {
        return Err(ConfigError::Peer(s.into()));
    }
    Ok((name.to_string(), addr))
}

/// Where the settings come from: read again on `SIGHUP`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file, if any.
    pub file: Option<PathBuf>,
    /// The command line's values.
    pub flags: Flags,
}

impl Settings {
    /// The effective settings, read now.
    pub fn read(&self) -> Result<Config, ConfigError> {
        Config::build(self.file.as_deref(), self.flags.clone())
    }
}

impl Config {
    /// Merges the file at `file` (if any) with flag values.
    pub fn build(file: Option<&Path>, flags: Flags) -> Result<Config, ConfigError> {
        let Flags {
            name,
            listen,
            socket,
            peers,
            ship_limit_mib,
            max_incoming,
            state_dir,
            auth,
            insecure,
            hand_over,
            log_level,
            log_format,
            metrics,
        } = flags;
        let fc = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.into(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: p.into(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let mut all_peers = fc.peers;
        let mut all_hand_over = fc.hand_over;
        all_hand_over.extend(hand_over);
        let auth = match (auth.or(fc.auth), insecure || fc.insecure) {
            (Some(_), true) => {
                return Err(ConfigError::Conflict(
                    "--auth and --insecure exclude each other",
                ))
            }
            (Some(dir), false) => PeerAuth::Cluster(dir),
            (None, true) => PeerAuth::Insecure,
            (None, false) if Path::new(DEFAULT_AUTH_DIR).is_dir() => {
                PeerAuth::Cluster(PathBuf::from(DEFAULT_AUTH_DIR))
            }
            (None, false) => PeerAuth::Unset,
        };
        for p in &peers {
            let (n, a) = parse_peer(p)?;
            all_peers.insert(n, a);
        }
        Ok(Config {
            name: name.or(fc.name).ok_or(ConfigError::Missing("--name"))?,
            listen: listen
                .or(fc.listen)
                .ok_or(ConfigError::Missing("--listen"))?,
            socket: socket
                .or(fc.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            peers: all_peers,
            ship_limit_mib: ship_limit_mib
                .or(fc.ship_limit_mib)
                .unwrap_or(DEFAULT_SHIP_LIMIT_MIB),
            max_incoming: max_incoming
                .or(fc.max_incoming)
                .unwrap_or(DEFAULT_MAX_INCOMING)
                .max(1),
            state_dir: state_dir
                .or(fc.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            auth,
            hand_over: all_hand_over,
            log_level: log_level.or(fc.log_level),
            log_format: log_format.or(fc.log_format).unwrap_or_default(),
            metrics: metrics.or(fc.metrics),
        })
    }

    /// Resolves a destination given as a peer name or `ADDR:PORT`.
    pub fn resolve(&self, to: &str) -> Option<SocketAddr> {
        resolve_peer(&self.peers, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_read_only_if_it_exists_and_none_was_given() {
        let dir = std::env::temp_dir().join(format!("migrate-cfg-default-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let default = dir.join("agent.toml");
        let given = PathBuf::from("/elsewhere.toml");
        assert_eq!(settings_file(None, &default), None);
        std::fs::write(&default, "name = \"h\"\n").unwrap();
        assert_eq!(settings_file(None, &default), Some(default.clone()));
        assert_eq!(settings_file(Some(given.clone()), &default), Some(given));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The documented example sets every key (a new key must be added
    /// there: this destructuring stops compiling without it).
    #[test]
    fn the_example_file_documents_every_key() {
        let text = include_str!("../agent.toml.example");
        let FileConfig {
            name,
            listen,
            socket,
            peers,
            ship_limit_mib,
            max_incoming,
            state_dir,
            auth,
            insecure,
            hand_over,
            log_level,
            log_format,
            metrics,
        } = toml::from_str(text).expect("agent.toml.example parses");
        assert!(metrics.is_some());
        assert!(!hand_over.is_empty());
        assert!(log_level.is_some() && log_format == Some(LogFormat::Text));
        assert!(name.is_some() && listen.is_some() && socket.is_some());
        assert!(ship_limit_mib.is_some() && max_incoming.is_some());
        assert!(state_dir.is_some() && auth.is_some() && !peers.is_empty());
        assert!(!insecure && text.lines().any(|l| l.starts_with("insecure = ")));
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("migrate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("agent.toml");
        std::fs::write(
            &f,
            "name = \"a\"\nlisten = \"127.0.0.1:1\"\n[peers]\nb = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let c = Config::build(
            Some(&f),
            Flags {
                name: Some("x".into()),
                peers: vec!["c=127.0.0.1:3".into()],
                insecure: true,
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.auth, PeerAuth::Insecure);
        assert!(Config::build(
            Some(&f),
            Flags {
                auth: Some("/x".into()),
                insecure: true,
                ..Flags::default()
            }
        )
        .is_err());
        assert_eq!(c.ship_limit_mib, DEFAULT_SHIP_LIMIT_MIB);
        assert_eq!(c.name, "x");
        assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.resolve("b"), Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(c.resolve("c"), Some("127.0.0.1:3".parse().unwrap()));
        assert_eq!(c.resolve("10.0.0.1:5"), Some("10.0.0.1:5".parse().unwrap()));
        assert_eq!(c.resolve("nope"), None);
        assert!(parse_peer("bad").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
