//! In-memory copy-on-write btrees of mappings, shadowing shared nodes on write the way the
//! kernel does, so a snapshot and its origin share every subtree neither has written since.

use crate::error::{Result, ThinMetaError};
use crate::node::max_entries;

/// Index of a node in the arena.
pub(crate) type NodeId = usize;

/// Most entries in a mapping-tree node (leaf or internal: both have 8-byte values).
pub(crate) const MAX_ENTRIES: usize = max_entries(8);
/// Fewest entries in a non-root node (`thin_check` insists on a third full).
pub(crate) const MIN_ENTRIES: usize = MAX_ENTRIES / 3;

/// Splits `n` items into balanced chunk sizes of about `fill` (at most `max`), each at least
/// `max / 3` unless there is only one chunk.
pub(crate) fn chunk_sizes(n: usize, fill: usize, max: usize) -> Vec<usize> {
    let min = max / 3;
    let mut chunks = n.div_ceil(fill.clamp(1, max)).max(1);
    while chunks > 1 && n / chunks < min {
        chunks -= 1;
    }
    while n.div_ceil(chunks) > max {
        chunks += 1;
    }
    (0..chunks)
        .map(|i| n / chunks + usize::from(i < n % chunks))
        .collect()
}

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
        let mut level: Vec<(u64, NodeId)> = Vec::new();
        let mut rest = entries;
        for size in chunk_sizes(entries.len(), fill, MAX_ENTRIES) {
            let (c, r) = rest.split_at(size);
            rest = r;
            let id = self.alloc(MemNode::Leaf {
                keys: c.iter().map(|e| e.0).collect(),
                values: c.iter().map(|e| e.1).collect(),
            });
            level.push((c[0].0, id));
        }
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut rest = &level[..];
            for size in chunk_sizes(level.len(), MAX_ENTRIES, MAX_ENTRIES) {
                let (c, r) = rest.split_at(size);
                rest = r;
                let id = self.alloc(MemNode::Internal {
                    keys: c.iter().map(|e| e.0).collect(),
                    children: c.iter().map(|e| e.1).collect(),
                });
                next.push((c[0].0, id));
            }
            level = next;
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
        // Rebalance bottom-up: a non-root node below the minimum borrows from or merges with a
        // sibling (shadowed first if shared).
        while let Some((parent, i)) = path.pop() {
            self.rebalance_child(parent, i);
        }
        if let MemNode::Internal { keys, children } = &self.nodes[root] {
            if keys.is_empty() {
                let _ = children;
                self.nodes[root] = MemNode::Leaf {
                    keys: Vec::new(),
                    values: Vec::new(),
                };
            }
        }
        (root, true)
    }

    /// Fixes child `i` of `parent` if it has fewer than [`MIN_ENTRIES`].
    fn rebalance_child(&mut self, parent: NodeId, i: usize) {
        let (child, nr_children) = match &self.nodes[parent] {
            MemNode::Internal { children, .. } => (children[i], children.len()),
            MemNode::Leaf { .. } => return,
        };
        let len = self.nodes[child].len();
        if len >= MIN_ENTRIES {
            return;
        }
        if nr_children == 1 {
            if len == 0 {
                self.refs[child] -= 1;
                self.nodes[parent] = MemNode::Internal {
                    keys: Vec::new(),
                    children: Vec::new(),
                };
            }
            return;
        }
        let (left_i, right_i) = if i + 1 < nr_children {
            (i, i + 1)
        } else {
            (i - 1, i)
        };
        let (left, right) = match &self.nodes[parent] {
            MemNode::Internal { children, .. } => (children[left_i], children[right_i]),
            MemNode::Leaf { .. } => return,
        };
        let left = self.shadow(left);
        let right = self.shadow(right);
        let total = self.nodes[left].len() + self.nodes[right].len();
        if total <= MAX_ENTRIES {
            // Merge right into left; drop right from the parent.
            let moved = std::mem::replace(
                &mut self.nodes[right],
                MemNode::Leaf {
                    keys: Vec::new(),
                    values: Vec::new(),
                },
            );
            self.refs[right] -= 1;
            match (&mut self.nodes[left], moved) {
                (MemNode::Leaf { keys, values }, MemNode::Leaf { keys: k, values: v }) => {
                    keys.extend(k);
                    values.extend(v);
                }
                (
                    MemNode::Internal { keys, children },
                    MemNode::Internal {
                        keys: k,
                        children: c,
                    },
                ) => {
                    keys.extend(k);
                    children.extend(c);
                }
                _ => {}
            }
            if let MemNode::Internal { keys, children } = &mut self.nodes[parent] {
                children[left_i] = left;
                keys.remove(right_i);
                children.remove(right_i);
            }
        } else {
            // Redistribute evenly.
            let want_left = total / 2;
            let (l, r) = (left, right);
            let mut all_keys = Vec::new();
            let mut all_vals = Vec::new();
            for id in [l, r] {
                match &mut self.nodes[id] {
                    MemNode::Leaf { keys, values } => {
                        all_keys.append(keys);
                        all_vals.append(values);
                    }
                    MemNode::Internal { keys, children } => {
                        all_keys.append(keys);
                        all_vals.extend(children.drain(..).map(|c| c as u64));
                    }
                }
            }
            let right_keys = all_keys.split_off(want_left);
            let right_vals = all_vals.split_off(want_left);
            let right_first = right_keys[0];
            for (id, ks, vs) in [(l, all_keys, all_vals), (r, right_keys, right_vals)] {
                match &mut self.nodes[id] {
                    MemNode::Leaf { keys, values } => {
                        *keys = ks;
                        *values = vs;
                    }
                    MemNode::Internal { keys, children } => {
                        *keys = ks;
                        *children = vs.into_iter().map(|c| c as NodeId).collect();
                    }
                }
            }
            if let MemNode::Internal { keys, children } = &mut self.nodes[parent] {
                children[left_i] = l;
                children[right_i] = r;
                keys[right_i] = right_first;
            }
        }
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
