package view

import "slices"

// View is one state of a group.
//
// Views handed out by providers share their members with other observers:
// treat them as read-only, and Clone a view to change it.
type View struct {
	// Group names the group.
	Group string
	// ID identifies the view; the zero ID is the view of a group nobody has
	// joined yet.
	ID ID
	// Members are the group's members in rank order: the order in which they
	// joined, oldest (the primary) first.
	Members []Member
	// Joined are the members of this view that were not in the last view the
	// observer received, in rank order.
	Joined []Member
	// Left are the members of the last view the observer received that are
	// not in this one, in their old rank order.
	Left []Member
}

// Member returns the member of v with the given ID.
func (v View) Member(id string) (Member, bool) {
	if i := v.Rank(id); i >= 0 {
		return v.Members[i], true
	}
	return Member{}, false
}

// Rank returns the rank of the member with the given ID, or -1 when v has no
// such member.
func (v View) Rank(id string) int {
	return slices.IndexFunc(v.Members, func(m Member) bool { return m.ID == id })
}

// Clone returns a deep copy of v.
func (v View) Clone() View {
	clone := func(ms []Member) []Member {
		if ms == nil {
			return nil
		}
		out := make([]Member, len(ms))
		for i, m := range ms {
			out[i] = m.Clone()
		}
		return out
	}
	v.Members = clone(v.Members)
	v.Joined = clone(v.Joined)
	v.Left = clone(v.Left)
	return v
}

// Diff returns the members of next that are not in prev (joined) and the
// members of prev that are not in next (left), each in the order of its list.
// Members are compared by ID and Incarnation (Member.Same): a member that
// joined again under its ID is in both.
func Diff(prev, next []Member) (joined, left []Member) {
	type ref struct {
		id          string
		incarnation uint64
	}
	in := func(ms []Member) map[ref]struct{} {
		set := make(map[ref]struct{}, len(ms))
		for _, m := range ms {
			set[ref{m.ID, m.Incarnation}] = struct{}{}
		}
		return set
	}
	before, after := in(prev), in(next)
	for _, m := range next {
		if _, ok := before[ref{m.ID, m.Incarnation}]; !ok {
			joined = append(joined, m)
		}
	}
	for _, m := range prev {
		if _, ok := after[ref{m.ID, m.Incarnation}]; !ok {
			left = append(left, m)
		}
	}
	return joined, left
}
