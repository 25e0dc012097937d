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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Checks sizes, order, key ranges and equal leaf depth; returns the entries.
    fn check(
        arena: &Arena,
        id: NodeId,
        lo: u64,
        hi: Option<u64>,
        root: bool,
    ) -> (u32, Vec<(u64, u64)>) {
        let node = &arena.nodes[id];
        let len = node.len();
        assert!(len <= MAX_ENTRIES);
        if !root {
            assert!(len >= MIN_ENTRIES, "non-root node with {len} entries");
        }
        let keys = match node {
            MemNode::Leaf { keys, .. } | MemNode::Internal { keys, .. } => keys,
        };
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(keys.iter().all(|&k| k >= lo && hi.is_none_or(|h| k < h)));
        match node {
            MemNode::Leaf { keys, values } => (
                0,
                keys.iter().copied().zip(values.iter().copied()).collect(),
            ),
            MemNode::Internal { keys, children } => {
                let mut depth = None;
                let mut all = Vec::new();
                for (i, &c) in children.iter().enumerate() {
                    let chi = keys.get(i + 1).copied().or(hi);
                    let (d, e) = check(arena, c, keys[i], chi, false);
                    assert!(depth.is_none_or(|x| x == d), "leaves at different depths");
                    depth = Some(d);
                    all.extend(e);
                }
                (depth.unwrap_or(0) + 1, all)
            }
        }
    }

    #[test]
    fn cow_tree_matches_a_model_and_keeps_snapshots_intact() {
        let mut x = 42u64;
        let mut rnd = move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let mut arena = Arena::default();
        let base: Vec<(u64, u64)> = (0..5000).map(|v| (v * 3, v)).collect();
        let mut roots = vec![arena.bulk(&base, 150).unwrap()];
        let mut models = vec![base.iter().copied().collect::<BTreeMap<_, _>>()];
        for step in 0..6000 {
            if step % 1500 == 0 {
                let src = rnd(roots.len() as u64) as usize;
                arena.refs[roots[src]] += 1;
                roots.push(roots[src]);
                models.push(models[src].clone());
            }
            let dev = rnd(roots.len() as u64) as usize;
            let key = rnd(16_000);
            if rnd(3) == 0 {
                let (r, found) = arena.remove(roots[dev], key);
                roots[dev] = r;
                assert_eq!(found, models[dev].remove(&key).is_some());
            } else {
                roots[dev] = arena.insert(roots[dev], key, step);
                models[dev].insert(key, step);
            }
        }
        for (root, model) in roots.iter().zip(&models) {
            let (_, entries) = check(&arena, *root, 0, None, true);
            assert_eq!(
                entries,
                model.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>()
            );
        }
        // Remove everything from one device: it ends as an empty leaf, the others intact.
        let keys: Vec<u64> = models[0].keys().copied().collect();
        for k in keys {
            roots[0] = arena.remove(roots[0], k).0;
        }
        assert_eq!(arena.count(roots[0]), 0);
        for (root, model) in roots.iter().zip(&models).skip(1) {
            assert_eq!(check(&arena, *root, 0, None, true).1.len(), model.len());
        }
    }

    #[test]
    fn chunk_sizes_respect_bounds() {
        for n in 1..3000 {
            for fill in [1, 50, 84, 100, 200, 252] {
                let sizes = chunk_sizes(n, fill, 252);
                assert_eq!(sizes.iter().sum::<usize>(), n);
                assert!(sizes.iter().all(|&s| s <= 252));
                if sizes.len() > 1 {
                    assert!(
                        sizes.iter().all(|&s| s >= 84),
                        "n={n} fill={fill} {sizes:?}"
                    );
                }
            }
        }
    }
}
