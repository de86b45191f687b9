package token

import (
	"testing"
	"time"
)

func BenchmarkIssue(b *testing.B) {
	s, _ := NewSigner(nil, "", 0)
	sub := sampleSubmod()
	for b.Loop() {
		_, _ = s.Issue(time.Now(), sub)
	}
}
func BenchmarkIssueVerified(b *testing.B) {
	s, _ := NewSigner(nil, "", 0)
	sub := sampleSubmod()
	for b.Loop() {
		_, _, _ = s.IssueVerified(time.Now(), sub)
	}
}
func BenchmarkVerify(b *testing.B) {
	s, _ := NewSigner(nil, "", 0)
	tok, _ := s.Issue(time.Now(), sampleSubmod())
	for b.Loop() {
		_, _ = s.Verify(tok, time.Now())
	}
}
