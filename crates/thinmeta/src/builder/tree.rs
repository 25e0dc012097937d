//! In-memory copy-on-write btrees of mappings, shadowing shared nodes on write the way the
//! kernel does, so a snapshot and its origin share every subtree neither has written since.

use crate::error::{Result, ThinMetaError};
use crate::node::max_entries;

/// Index of a node in the arena.
pub(crate) type NodeId = usize;

/// Most entries in a mapping-tree node (leaf or internal: both have 8-byte values).
pub(crate) const MAX_ENTRIES: usize = max_entries(8);

#[derive(Clone)]
pub(crate) enum MemNode {
    Leaf {
        keys: Vec<u64>,
        values: Vec<u64>,
    },
    Internal {
        keys: Vec<u64>,
        children: Vec<NodeId>,
    },
}

impl MemNode {
    fn len(&self) -> usize {
        match self {
            MemNode::Leaf { keys, .. } | MemNode::Internal { keys, .. } => keys.len(),
        }
    }
    fn first_key(&self) -> Option<u64> {
        match self {
            MemNode::Leaf { keys, .. } | MemNode::Internal { keys, .. } => keys.first().copied(),
        }
    }
}

/// Arena of nodes with the reference counts that decide shadowing.
#[derive(Default)]
pub(crate) struct Arena {
    pub nodes: Vec<MemNode>,
    pub refs: Vec<u32>,
}

impl Arena {
    pub fn alloc(&mut self, node: MemNode) -> NodeId {
        self.nodes.push(node);
        self.refs.push(1);
        self.nodes.len() - 1
    }

    pub fn empty_tree(&mut self) -> NodeId {
        self.alloc(MemNode::Leaf {
            keys: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Builds a tree from ascending `(key, value)` pairs, `fill` entries per leaf.
    pub fn bulk(&mut self, entries: &[(u64, u64)], fill: usize) -> Result<NodeId> {
        if fill == 0 || fill > MAX_ENTRIES {
            return Err(ThinMetaError::InvalidDescription(format!(
                "leaf fill {fill} not in 1..={MAX_ENTRIES}"
            )));
        }
        if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(ThinMetaError::InvalidDescription(
                "mappings not in strictly ascending virtual-block order".into(),
            ));
        }
        if entries.is_empty() {
            return Ok(self.empty_tree());
        }
        let mut level: Vec<(u64, NodeId)> = entries
            .chunks(fill)
            .map(|c| {
                let id = self.alloc(MemNode::Leaf {
                    keys: c.iter().map(|e| e.0).collect(),
                    values: c.iter().map(|e| e.1).collect(),
                });
                (c[0].0, id)
            })
            .collect();
        while level.len() > 1 {
            level = level
                .chunks(MAX_ENTRIES)
                .map(|c| {
                    let id = self.alloc(MemNode::Internal {
                        keys: c.iter().map(|e| e.0).collect(),
                        children: c.iter().map(|e| e.1).collect(),
                    });
                    (c[0].0, id)
                })
                .collect();
        }
        Ok(level[0].1)
    }

    /// Returns a node that may be modified in place: `id` itself if unshared, else a copy
    /// (the original loses one reference, its children gain one).
    fn shadow(&mut self, id: NodeId) -> NodeId {
        if self.refs[id] <= 1 {
            return id;
        }
        self.refs[id] -= 1;
        let copy = self.nodes[id].clone();
        if let MemNode::Internal { children, .. } = &copy {
            for &c in children {
                self.refs[c] += 1;
            }
        }
        self.alloc(copy)
    }

    /// Inserts or replaces `key` in the tree at `root`; returns the (possibly new) root.
    pub fn insert(&mut self, root: NodeId, key: u64, value: u64) -> NodeId {
        let root = self.shadow(root);
        // Path of (node, child index) from the root down to the leaf's parent.
        let mut path: Vec<(NodeId, usize)> = Vec::new();
        let mut cur = root;
        loop {
            match &mut self.nodes[cur] {
                MemNode::Leaf { keys, values } => {
                    match keys.binary_search(&key) {
                        Ok(i) => values[i] = value,
                        Err(i) => {
                            keys.insert(i, key);
                            values.insert(i, value);
                        }
                    }
                    break;
                }
                MemNode::Internal { keys, children } => {
                    let i = match keys.binary_search(&key) {
                        Ok(i) => i,
                        Err(0) => {
                            keys[0] = key;
                            0
                        }
                        Err(i) => i - 1,
                    };
                    let child = children[i];
                    path.push((cur, i));
                    let shadowed = self.shadow(child);
                    if let MemNode::Internal { children, .. } = &mut self.nodes[cur] {
                        children[i] = shadowed;
                    }
                    cur = shadowed;
                }
            }
        }
        // Split overfull nodes bottom-up.
        let mut node = cur;
        let mut root = root;
        loop {
            if self.nodes[node].len() <= MAX_ENTRIES {
                break;
            }
            let right = self.split(node);
            let right_key = self.nodes[right].first_key().unwrap_or(0);
            match path.pop() {
                Some((parent, i)) => {
                    if let MemNode::Internal { keys, children } = &mut self.nodes[parent] {
                        keys.insert(i + 1, right_key);
                        children.insert(i + 1, right);
                    }
                    node = parent;
                }
                None => {
                    let left_key = self.nodes[node].first_key().unwrap_or(0);
                    root = self.alloc(MemNode::Internal {
                        keys: vec![left_key, right_key],
                        children: vec![node, right],
                    });
                    break;
                }
            }
        }
        root
    }

    /// Moves the upper half of `id` to a new node and returns it.
    fn split(&mut self, id: NodeId) -> NodeId {
        let half = self.nodes[id].len() / 2;
        let right = match &mut self.nodes[id] {
            MemNode::Leaf { keys, values } => MemNode::Leaf {
                keys: keys.split_off(half),
                values: values.split_off(half),
            },
            MemNode::Internal { keys, children } => MemNode::Internal {
                keys: keys.split_off(half),
                children: children.split_off(half),
            },
        };
        self.alloc(right)
    }

    /// Removes `key`; returns the new root and whether it was present. Empty non-root nodes
    /// are unlinked (no rebalancing).
    pub fn remove(&mut self, root: NodeId, key: u64) -> (NodeId, bool) {
        if !self.contains(root, key) {
            return (root, false);
        }
        let root = self.shadow(root);
        let mut path: Vec<(NodeId, usize)> = Vec::new();
        let mut cur = root;
        loop {
            match &mut self.nodes[cur] {
                MemNode::Leaf { keys, values } => {
                    if let Ok(i) = keys.binary_search(&key) {
                        keys.remove(i);
                        values.remove(i);
                    }
                    break;
                }
                MemNode::Internal { keys, children } => {
                    let i = match keys.binary_search(&key) {
                        Ok(i) => i,
                        Err(i) => i.saturating_sub(1),
                    };
                    let child = children[i];
                    path.push((cur, i));
                    let shadowed = self.shadow(child);
                    if let MemNode::Internal { children, .. } = &mut self.nodes[cur] {
                        children[i] = shadowed;
                    }
                    cur = shadowed;
                }
            }
        }
        let mut node = cur;
        while self.nodes[node].len() == 0 {
            let Some((parent, i)) = path.pop() else { break };
            self.refs[node] -= 1;
            if let MemNode::Internal { keys, children } = &mut self.nodes[parent] {
                keys.remove(i);
                children.remove(i);
            }
            node = parent;
        }
        // An internal root left empty becomes an empty leaf.
        if self.nodes[root].len() == 0 {
            self.nodes[root] = MemNode::Leaf {
                keys: Vec::new(),
                values: Vec::new(),
            };
        }
        (root, true)
    }

    fn contains(&self, mut cur: NodeId, key: u64) -> bool {
        loop {
            match &self.nodes[cur] {
                MemNode::Leaf { keys, .. } => return keys.binary_search(&key).is_ok(),
                MemNode::Internal { keys, children } => {
                    let i = match keys.binary_search(&key) {
                        Ok(i) => i,
                        Err(0) => return false,
                        Err(i) => i - 1,
                    };
                    cur = children[i];
                }
            }
        }
    }

    /// Number of entries under `id`.
    pub fn count(&self, id: NodeId) -> u64 {
        match &self.nodes[id] {
            MemNode::Leaf { keys, .. } => keys.len() as u64,
            MemNode::Internal { children, .. } => children.iter().map(|&c| self.count(c)).sum(),
        }
    }
}
