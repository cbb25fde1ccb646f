//! Pre-flight of a process with descendants, taken as moving together.

use crate::fd::TcpRules;
use migrate_proto::msg::{Code, FileNeed, Mode, Reason};

use super::{inspect_in_tree, Inspection, Refusal};
use crate::capture::tree::Tree;
use crate::fd::Class;
use crate::host::access::Caller;
use crate::host::procfs::ending;

/// What pre-flight learned of a tree that may move.
#[derive(Debug)]
pub struct TreeInspection {
    /// The root's inspection, its `needs` grown by every member's.
    pub root: Inspection,
    /// The other members' pids, zombies too, in the tree's order.
    pub kin: Vec<i32>,
}

/// Checks the process `pid` with its descendants as one migration in
/// `mode`: what stops the tree as a whole, then each member as
/// [`inspect_in_tree`] does with the others as its kin (refused for any
/// member's obstacle, naming the member). `None` for a process without
/// children, which moves alone.
///
/// What a tree does not take yet is refused here, before the freeze:
/// pre-copy and hybrid modes, members that are different users to
/// the filesystem (the destination looks every file up as one), and
/// standard streams forwarded from a member other than the root and not
/// inherited from it.
pub fn inspect_tree(
    pid: i32,
    caller: &Caller,
    agent_pid: i32,
    tcp: &TcpRules,
    mode: Mode,
) -> Result<Option<TreeInspection>, Refusal> {
    let Some(tree) = Tree::read(pid).filter(|t| t.members.len() > 1) else {
        return Ok(None);
    };
    let mut why = tree.obstacles();
    if !matches!(mode, Mode::StopCopy | Mode::PostCopy) {
        why.push(Reason::new(
            Code::Children,
            format!(
                "process {pid} has {} descendants: a process tree moves in post-copy or \
                 stop-and-copy mode for now; {} for trees is not built yet",
                tree.members.len() - 1,
                mode.name()
            ),
        ));
    }
    let kin = tree.pids();
    let mut root: Option<Inspection> = None;
    let mut needs = Vec::new();
    for m in tree.members.iter().filter(|m| !m.zombie) {
        let named = |text: &str| {
            if m.pid == pid {
                text.to_string()
            } else {
                format!("process {} ({}): {text}", m.pid, m.comm)
            }
        };
        let insp = match inspect_in_tree(m.pid, caller, agent_pid, false, tcp, &kin) {
            Ok(i) => i,
            // A member that ended or is ending since the tree was read (a short-lived
            // child) is not an obstacle: the freeze reads the tree again.
            Err(_) if m.pid != pid && ending(m.pid) => continue,
            Err(r) => {
                why.extend(r.0.into_iter().map(|r| Reason::new(r.code, named(&r.text))));
                continue;
            }
        };
        let mut mine = Vec::new();
        // The root's standard streams are forwarded as for a process
        // alone, and a member's that it inherited from the root go with
        // them; another member's own are not yet.
        for info in insp.survey.infos.iter().filter(|_| m.pid != pid) {
            if matches!(insp.survey.class(info), Class::Forwarded { .. })
                && !matches!(insp.survey.inherited_from(info), Ok(Some(_)))
            {
                mine.push(Reason::new(
                    Code::Terminal,
                    named(&format!(
                        "fd {}: a standard stream forwarded from a process of a tree other \
                         than its root, and not inherited from it, is not built yet (redirect \
                         it to a file)",
                        info.fd
                    )),
                ));
            }
        }
        for n in insp.needs.iter().filter(|n| n.deleted) {
            mine.push(Reason::new(
                Code::File,
                named(&format!(
                    "{} ({}) is deleted: shipping files with a tree is not built yet",
                    n.path, n.why
                )),
            ));
        }
        // What a member found as it ended (its descriptors closing) is no
        // obstacle either.
        if !mine.is_empty() && m.pid != pid && ending(m.pid) {
            continue;
        }
        why.extend(mine);
        match &root {
            Some(r) if r.who != insp.who => why.push(Reason::new(
                Code::Children,
                named(&format!(
                    "runs as another user than process {pid}: a tree moves only when its \
                     members are one user to the filesystem"
                )),
            )),
            // A member's files are checked, never shipped (its
            // descriptor numbers are not the root's).
            Some(_) => needs.extend(insp.needs.into_iter().map(|n| FileNeed { ship: None, ..n })),
            None => root = Some(insp),
        }
    }
    match root {
        Some(mut root) if why.is_empty() => {
            for n in needs {
                if !root
                    .needs
                    .iter()
                    .any(|o| o.path == n.path && o.ident == n.ident)
                {
                    root.needs.push(n);
                }
            }
            Ok(Some(TreeInspection {
                root,
                kin: kin.into_iter().filter(|&p| p != pid).collect(),
            }))
        }
        _ => Err(Refusal(why)),
    }
}
