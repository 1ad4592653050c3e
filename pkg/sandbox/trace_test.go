package sandbox

import (
	"bufio"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCompleteLines(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"complete lines", "call c1 false c1 1\ncall c1 false c1 2\n", []string{"call c1 false c1 1", "call c1 false c1 2"}},
		{"a line cut by a kill", "call c1 false c1 1\ncall c1 false c1 1", []string{"call c1 false c1 1"}},
		{"carriage returns", "call c1 true c1 3\r\n", []string{"call c1 true c1 3"}},
		{"an empty line", "\n", []string{""}},
		{"nothing", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := bufio.NewScanner(strings.NewReader(tt.in))
			sc.Split(completeLines)
			var got []string
			for sc.Scan() {
				got = append(got, sc.Text())
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("lines %q, want %q", got, tt.want)
			}
		})
	}
}
