//go:build !unix

package staging

// alive cannot tell here: every process counts as alive, so nothing is swept.
func alive(int) bool { return true }
