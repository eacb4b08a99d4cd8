//! A minimal line diff for `stockade diff PATH`: longest common subsequence over lines, printed
//! as `-old` / `+new` / ` same` lines (at most 4000 lines a side; larger inputs are summarised).

const MAX_LINES: usize = 4000;

/// The diff of `a` and `b`, one output line per input line.
pub fn unified(a: &str, b: &str) -> Vec<String> {
    let x: Vec<&str> = a.lines().collect();
    let y: Vec<&str> = b.lines().collect();
    if x.len() > MAX_LINES || y.len() > MAX_LINES {
        return vec![format!(
            "(too many lines to diff: {} -> {} lines)",
            x.len(),
            y.len()
        )];
    }
    let (n, m) = (x.len(), y.len());
    // lcs[i][j]: LCS length of x[i..] and y[j..]
    let mut lcs = vec![0u16; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if x[i] == y[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            out.push(format!(" {}", x[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            out.push(format!("-{}", x[i]));
            i += 1;
        } else {
            out.push(format!("+{}", y[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn changed_line_is_minus_then_plus() {
        let d = super::unified("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(d, vec![" a", "-b", "+B", " c", "+d"]);
    }
}
