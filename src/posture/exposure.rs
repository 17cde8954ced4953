//! Exposure to the Internet: how much public address space a policy may open a database to, and
//! how much a set of security-group or network-ACL rules actually opens it to.
//!
//! **The bound.** Private space — RFC 1918 (`10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`),
//! RFC 6598 shared space (`100.64.0.0/10`, carrier-grade NAT and VPC secondary ranges) and IPv6
//! unique local addresses (`fc00::/7`) — cannot be reached from the Internet and is not bounded.
//! Everything else is public, and a policy may allow at most [`PUBLIC_BUDGET`] units of it per
//! address family, *in total*, however the space is split: 65,536 IPv4 addresses (one `/16`) and
//! 65,536 IPv6 `/64` subnets (one `/48`). An `allowedCidrs` entry that is not inside a private
//! range counts whole; IPv6 entries longer than `/64` count as one `/64` (so the units fit CEL's
//! 64-bit integers, and only ever over-count). A `/16` is the largest AWS VPC and the largest
//! block one organisation's egress normally needs; a `/48` is one IPv6 end site (RFC 6177) and
//! the longest prefix the Internet routes. More than that is not "our clients" any more but a
//! slice of the Internet: a cloud region or an ISP's pool, where anyone can rent an address.
//!
//! The same function decides at admission (the CEL rule [`cel_budget_rule`] is generated from the
//! constants here) and in `evaluate` (which cannot trust that a stored policy was admitted under
//! this rule: objects created before it, or kept by validation ratcheting, are read as they are).

use ipnet::IpNet;

/// Ranges that the Internet cannot reach: they count nothing against the bound.
pub const PRIVATE_RANGES: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// Public address space a policy may allow per family, in units (IPv4: addresses; IPv6: `/64`
/// subnets).
pub const PUBLIC_BUDGET: u64 = 1 << 16;

/// The largest public prefix that fits the budget on its own: `/16` for IPv4 and `/48` for IPv6.
pub const fn budget_prefix(family: Family) -> u8 {
    match family {
        Family::V4 => 16,
        Family::V6 => 48,
    }
}

/// The prefix of one unit: an IPv4 address, an IPv6 `/64`.
const fn unit_prefix(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => 64,
    }
}

/// The budget in addresses: 2^16 IPv4 addresses, 2^80 IPv6 addresses.
pub const fn budget_addresses(family: Family) -> u128 {
    (PUBLIC_BUDGET as u128) << (bits(family) - unit_prefix(family))
}

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn cel_number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

const fn bits(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

fn private_nets() -> impl Iterator<Item = IpNet> {
    PRIVATE_RANGES
        .iter()
        .filter_map(|r| r.parse::<IpNet>().ok())
}

/// Whether `net` lies inside a private range (and so cannot be reached from the Internet).
pub fn is_private(net: &IpNet) -> bool {
    private_nets().any(|p| p.contains(net))
}

/// What one `allowedCidrs` entry costs against the budget of its family: 0 when private, its
/// size in units when public, and more than the whole budget when it is larger than
/// [`budget_prefix`] on its own. [`cel_budget_rule`] computes exactly this.
pub fn weight(net: &IpNet) -> u64 {
    if is_private(net) {
        return 0;
    }
    let family = Family::of(net);
    let prefix = net.prefix_len();
    if prefix < budget_prefix(family) {
        return PUBLIC_BUDGET + 1;
    }
    let prefix = prefix.min(unit_prefix(family));
    1 << (unit_prefix(family) - prefix)
}

/// Why a list of allowed CIDRs may not be used, or the parsed list.
///
/// Rejected: an entry that is not a CIDR, `0.0.0.0/0` or `::/0`, and entries whose public space
/// adds up to more than the budget of their family (the sum counts nested entries twice; list
/// only the outer one).
pub fn check_allowed(cidrs: &[String]) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::with_capacity(cidrs.len());
    for c in cidrs {
        let net: IpNet = c
            .parse()
            .map_err(|_| format!("allowedCidrs entry {c:?} is not a CIDR"))?;
        if net.prefix_len() == 0 {
            return Err(format!(
                "allowedCidrs entry {c} is the whole address space, which is never allowed"
            ));
        }
        nets.push(net);
    }
    for family in Family::BOTH {
        let public: Vec<&IpNet> = nets
            .iter()
            .filter(|n| Family::of(n) == family && weight(n) > 0)
            .collect();
        let total = public
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(weight(n)));
        if total > PUBLIC_BUDGET {
            let listed: Vec<String> = public.iter().map(|n| n.to_string()).collect();
            return Err(format!(
                "allowedCidrs open the database port to more public {} space than a policy may allow (at most {} in total, however it is split; private ranges do not count): {}",
                family.name(),
                describe_budget(family),
                listed.join(", ")
            ));
        }
    }
    Ok(nets)
}

/// The budget of a family for people: `65,536 public IPv4 addresses (one /16)`, `one /48 of
/// public IPv6`.
pub fn describe_budget(family: Family) -> String {
    match family {
        Family::V4 => format!(
            "{} public IPv4 addresses (one /{})",
            thousands(u128::from(PUBLIC_BUDGET)),
            budget_prefix(family)
        ),
        Family::V6 => format!("one /{} of public IPv6", budget_prefix(family)),
    }
}

/// The CEL rule (on the `allowedCidrs` list) that admits a list only when the public entries of
/// `family` weigh at most [`PUBLIC_BUDGET`], computing [`weight`] exactly. Kubernetes CEL has no
/// shift or power, so the powers of two come from a list literal.
pub fn cel_budget_rule(family: Family) -> String {
    let private: Vec<String> = private_nets()
        .filter(|p| Family::of(p) == family)
        .map(|p| format!("'{p}'"))
        .collect();
    let low = budget_prefix(family);
    let high = unit_prefix(family);
    let powers: Vec<String> = (low..=high)
        .map(|prefix| (1u64 << (high - prefix)).to_string())
        .collect();
    format!(
        "self.filter(c, isCIDR(c) && cidr(c).ip().family() == {family} && ![{private}].exists(p, cidr(p).containsCIDR(c)))\
         .map(c, cidr(c).prefixLength() < {low} ? {over} : (cidr(c).prefixLength() >= {high} ? 1 : [{powers}][cidr(c).prefixLength() - {low}]))\
         .sum() <= {budget}",
        family = family.cel_number(),
        private = private.join(", "),
        over = PUBLIC_BUDGET + 1,
        powers = powers.join(", "),
        budget = PUBLIC_BUDGET,
    )
}

/// The message of [`cel_budget_rule`].
pub fn cel_budget_message(family: Family) -> String {
    let private: Vec<String> = private_nets()
        .filter(|p| Family::of(p) == family)
        .map(|p| p.to_string())
        .collect();
    let halves = match family {
        Family::V4 => "0.0.0.0/1 + 128.0.0.0/1",
        Family::V6 => "::/1 + 8000::/1",
    };
    format!(
        "allowedCidrs may open the database port to at most {} in total, however the space is split ({halves} is the whole Internet); {} {} private and not counted",
        describe_budget(family),
        private.join(", "),
        if private.len() == 1 { "is" } else { "are" },
    )
}

/// Addresses of one family as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressSet {
    ranges: Vec<(u128, u128)>,
}

fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

impl AddressSet {
    /// The addresses of `net`.
    pub fn of(net: &IpNet) -> AddressSet {
        AddressSet {
            ranges: vec![bounds(net)],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds every address of `other`.
    pub fn union_with(&mut self, other: &AddressSet) {
        let mut all: Vec<(u128, u128)> = self.ranges.iter().chain(&other.ranges).copied().collect();
        all.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(all.len());
        for (lo, hi) in all {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.ranges = merged;
    }

    /// The addresses of `self` that are not in `other`.
    pub fn minus(&self, other: &AddressSet) -> AddressSet {
        let mut out = Vec::new();
        for &(lo, hi) in &self.ranges {
            let mut start = lo;
            let mut open = true;
            for &(olo, ohi) in &other.ranges {
                if ohi < start || olo > hi {
                    continue;
                }
                if olo > start {
                    out.push((start, olo - 1));
                }
                if ohi >= hi {
                    open = false;
                    break;
                }
                start = ohi + 1;
            }
            if open {
                out.push((start, hi));
            }
        }
        AddressSet { ranges: out }
    }

    /// The addresses of `self` outside the private ranges of `family`.
    pub fn without_private(&self, family: Family) -> AddressSet {
        self.minus(&private_space(family))
    }

    /// How many addresses, saturating at `u128::MAX` (all of IPv6 is 2^128).
    pub fn count(&self) -> u128 {
        self.ranges.iter().fold(0u128, |sum, (lo, hi)| {
            sum.saturating_add((hi - lo).saturating_add(1))
        })
    }
}

/// Addresses of both families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exposure {
    v4: AddressSet,
    v6: AddressSet,
}

impl Exposure {
    fn set_mut(&mut self, family: Family) -> &mut AddressSet {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn set(&self, family: Family) -> &AddressSet {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Adds every address of `net`.
    pub fn add(&mut self, net: &IpNet) {
        self.set_mut(Family::of(net))
            .union_with(&AddressSet::of(net));
    }

    /// The addresses of `net` that are not in this exposure yet.
    pub fn fresh(&self, net: &IpNet) -> AddressSet {
        AddressSet::of(net).minus(self.set(Family::of(net)))
    }

    /// Adds addresses of one family.
    pub fn add_set(&mut self, family: Family, set: &AddressSet) {
        self.set_mut(family).union_with(set);
    }

    /// The public addresses of one family in this exposure.
    pub fn public(&self, family: Family) -> AddressSet {
        self.set(family).minus(&private_space(family))
    }

    /// Whether this exposure holds more public space of some family than a policy may allow.
    pub fn exceeds_budget(&self) -> bool {
        Family::BOTH
            .into_iter()
            .any(|f| self.public(f).count() > budget_addresses(f))
    }

    /// `the whole IPv4 Internet`, `2,147,483,648 public IPv4 addresses`, `about 2^127 public IPv6
    /// addresses`, for each family over the budget; empty when none is.
    pub fn describe_excess(&self) -> Vec<String> {
        Family::BOTH
            .into_iter()
            .filter_map(|family| {
                let public = self.public(family);
                let count = public.count();
                (count > budget_addresses(family)).then(|| describe_count(family, &public))
            })
            .collect()
    }
}

fn private_space(family: Family) -> AddressSet {
    let mut set = AddressSet::default();
    for net in private_nets().filter(|n| Family::of(n) == family) {
        set.union_with(&AddressSet::of(&net));
    }
    set
}

/// All public addresses of a family.
fn all_public(family: Family) -> AddressSet {
    let all = AddressSet {
        ranges: vec![(0, u128::MAX >> (128 - u32::from(bits(family))))],
    };
    all.minus(&private_space(family))
}

fn describe_count(family: Family, public: &AddressSet) -> String {
    if *public == all_public(family) {
        return format!("the whole {} Internet", family.name());
    }
    let count = public.count();
    match family {
        Family::V4 => format!("{} public IPv4 addresses", thousands(count)),
        Family::V6 => format!(
            "about 2^{} public IPv6 addresses",
            127 - count.leading_zeros()
        ),
    }
}

/// `4294967296` → `4,294,967,296`.
pub fn thousands(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test cidr")
    }

    fn allowed(list: &[&str]) -> Result<Vec<IpNet>, String> {
        check_allowed(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn weights_count_public_space_and_ignore_private_space() {
        assert_eq!(weight(&net("10.0.0.0/8")), 0);
        assert_eq!(weight(&net("100.64.0.0/10")), 0);
        assert_eq!(weight(&net("fd00::/8")), 0);
        assert_eq!(weight(&net("52.0.0.0/16")), 65_536);
        assert_eq!(weight(&net("52.0.0.0/24")), 256);
        assert_eq!(weight(&net("52.0.0.1/32")), 1);
        assert_eq!(weight(&net("52.0.0.0/15")), PUBLIC_BUDGET + 1);
        assert_eq!(weight(&net("0.0.0.0/1")), PUBLIC_BUDGET + 1);
        // Straddling a private range is public (10.0.0.0/7 also holds 11.0.0.0/8).
        assert_eq!(weight(&net("10.0.0.0/7")), PUBLIC_BUDGET + 1);
        assert_eq!(weight(&net("2001:db8::/48")), 65_536);
        assert_eq!(weight(&net("2001:db8::/64")), 1);
        assert_eq!(weight(&net("2001:db8::1/128")), 1);
        assert_eq!(weight(&net("2001:db8::/47")), PUBLIC_BUDGET + 1);
        assert_eq!(weight(&net("8000::/1")), PUBLIC_BUDGET + 1);
        assert_eq!(budget_addresses(Family::V4), 1 << 16);
        assert_eq!(budget_addresses(Family::V6), 1 << 80);
    }

    #[test]
    fn the_internet_in_pieces_is_over_the_budget() {
        for list in [
            &["0.0.0.0/1", "128.0.0.0/1"][..],
            &["0.0.0.0/1"],
            &["::/1", "8000::/1"],
            &["8000::/1"],
            &["52.0.0.0/16", "53.0.0.0/24"],
            &["2001:db8::/48", "2001:db8:1::/64"],
            &["0.0.0.0/0"],
            &["::/0"],
            &["not-a-cidr"],
        ] {
            assert!(allowed(list).is_err(), "{list:?} must be refused");
        }
        for list in [
            &[
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
            ][..],
            &["52.0.0.0/16", "10.0.0.0/8"],
            &["52.0.0.0/17", "53.0.0.0/17"],
            &["2001:db8::/48", "52.0.0.0/16"],
            &["2001:db8::/49", "2001:db9::/49"],
            &[],
        ] {
            assert!(allowed(list).is_ok(), "{list:?} must be allowed");
        }
    }

    #[test]
    fn address_sets_union_and_subtract() {
        let mut e = Exposure::default();
        e.add(&net("0.0.0.0/1"));
        assert!(e.exceeds_budget());
        assert_eq!(
            e.describe_excess(),
            vec!["2,126,512,128 public IPv4 addresses"]
        );
        e.add(&net("128.0.0.0/1"));
        assert_eq!(e.describe_excess(), vec!["the whole IPv4 Internet"]);
        let fresh = e.fresh(&net("10.0.0.0/8"));
        assert!(fresh.is_empty());
        let mut small = Exposure::default();
        small.add(&net("52.0.0.0/16"));
        small.add(&net("10.0.0.0/8"));
        assert!(!small.exceeds_budget());
        small.add(&net("52.1.0.0/24"));
        assert!(small.exceeds_budget());
        assert_eq!(
            small.describe_excess(),
            vec!["65,792 public IPv4 addresses"]
        );
        let mut v6 = Exposure::default();
        v6.add(&net("::/0"));
        assert_eq!(v6.describe_excess(), vec!["the whole IPv6 Internet"]);
        let half = AddressSet::of(&net("::/0")).minus(&AddressSet::of(&net("8000::/1")));
        assert_eq!(half, AddressSet::of(&net("::/1")));
        let mut hole = AddressSet::of(&net("10.0.0.0/8"));
        hole = hole.minus(&AddressSet::of(&net("10.1.0.0/16")));
        assert_eq!(hole.count(), (1 << 24) - (1 << 16));
        assert_eq!(AddressSet::of(&net("::/0")).count(), u128::MAX);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(65_536), "65,536");
        assert_eq!(thousands(4_294_967_296), "4,294,967,296");
    }

    #[test]
    fn cel_rule_mirrors_the_weights() {
        let rule = cel_budget_rule(Family::V4);
        assert!(rule.contains("'10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10'"));
        assert!(rule.contains("[65536, 32768,"));
        assert!(rule.ends_with("<= 65536"));
        let rule = cel_budget_rule(Family::V6);
        assert!(rule.contains("['fc00::/7']"));
        assert!(rule.contains("< 48 ? 65537"));
    }
}
