//! Placement tables: which group a new player lands in, by hash slot.
//!
//! Weighted Maglev: each shard gets a share of the slots proportional to its
//! weight (free player slots), and claims them in its own pseudo-random
//! order, so a weight change moves few slots. Only NEW players are placed
//! through this table; existing sessions never look at it.

/// One candidate for placement.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Stable name: seeds the shard's slot order.
    pub name: &'a str,
    pub group: u32,
    /// Share of new players; 0 = none (full, draining, standby or down).
    pub weight: u32,
}

fn fnv1a(data: &str, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Slots each candidate gets: proportional to weight, summing to `slots`
/// (largest remainder, ties to the earlier candidate).
pub fn quotas(candidates: &[Candidate<'_>], slots: usize) -> Vec<usize> {
    let total: u64 = candidates.iter().map(|c| c.weight as u64).sum();
    if total == 0 {
        return vec![0; candidates.len()];
    }
    let mut q: Vec<usize> = candidates.iter().map(|c| (c.weight as u64 * slots as u64 / total) as usize).collect();
    let mut left = slots - q.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..candidates.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(candidates[i].weight as u64 * slots as u64 % total));
    for &i in by_remainder.iter().filter(|&&i| candidates[i].weight > 0) {
        if left == 0 {
            break;
        }
        q[i] += 1;
        left -= 1;
    }
    q
}

/// A table of `slots` group ids (prime `slots` for a full Maglev cycle); all
/// zero when no candidate has weight.
pub fn fill(candidates: &[Candidate<'_>], slots: usize) -> Vec<u32> {
    let mut table = vec![0u32; slots];
    let quota = quotas(candidates, slots);
    let walk: Vec<(usize, usize)> = candidates
        .iter()
        .map(|c| {
            let offset = (fnv1a(c.name, 0x5a4d) % slots as u64) as usize;
            let skip = (fnv1a(c.name, 0x7777) % (slots as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; candidates.len()];
    let mut taken = vec![0usize; candidates.len()];
    let mut filled = 0;
    while filled < slots && quota.iter().sum::<usize>() > 0 {
        for (i, c) in candidates.iter().enumerate() {
            if taken[i] == quota[i] {
                continue;
            }
            let (offset, skip) = walk[i];
            loop {
                let slot = (offset + next[i] * skip) % slots;
                next[i] += 1;
                if table[slot] == 0 {
                    table[slot] = c.group;
                    taken[i] += 1;
                    filled += 1;
                    break;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, group: u32, weight: u32) -> Candidate<'_> {
        Candidate { name, group, weight }
    }

    #[test]
    fn shares_follow_weights_exactly() {
        let cands = [c("a", 1, 100), c("b", 2, 200), c("c", 3, 300)];
        let t = fill(&cands, 4093);
        let n = |g| t.iter().filter(|&&x| x == g).count();
        assert_eq!(n(0), 0);
        assert_eq!(n(1) + n(2) + n(3), 4093);
        assert!((n(1) as i64 - 682).abs() <= 1, "{}", n(1));
        assert!((n(2) as i64 - 1364).abs() <= 1, "{}", n(2));
        assert!((n(3) as i64 - 2046).abs() <= 1, "{}", n(3));
    }

    #[test]
    fn zero_weight_gets_nothing_and_no_weight_leaves_the_table_empty() {
        let t = fill(&[c("a", 1, 0), c("b", 2, 5)], 13);
        assert!(t.iter().all(|&g| g == 2));
        let t = fill(&[c("a", 1, 0)], 13);
        assert!(t.iter().all(|&g| g == 0));
    }

    #[test]
    fn a_weight_change_moves_few_slots() {
        let before = fill(&[c("a", 1, 100), c("b", 2, 100), c("c", 3, 100)], 4093);
        let after = fill(&[c("a", 1, 100), c("b", 2, 100), c("c", 3, 110)], 4093);
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        // The ideal is ~4093 * (110/310 - 100/300) = 88 slots.
        assert!(moved < 400, "{moved} slots moved");
    }
}
