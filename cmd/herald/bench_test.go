package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestBenchClusterFlags: bad cluster choices are refused with a clear
// error before anything starts.
func TestBenchClusterFlags(t *testing.T) {
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"fanout", "-cluster", "-2"}, "-cluster must be 1 to 9"},
		{[]string{"fanout", "-cluster", "12"}, "-cluster must be 1 to 9"},
		{[]string{"fanout", "-cluster", "abc"}, "invalid value"},
		{[]string{"fanout", "-cluster", "3", "-spawn=false"}, "needs -spawn"},
		{[]string{"unicast", "-cluster", "3", "-api-nodes", "4"}, "node 4 out of range: the run has 3 node(s)"},
		{[]string{"unicast", "-cluster", "3", "-client-nodes", "2,x"}, "not a node number"},
		{[]string{"storm", "-mode", "kill"}, "give -cluster N"},
		{[]string{"storm", "-mode", "kill", "-cluster", "1"}, "(2 or more)"},
		{[]string{"fanout", "-targets", "http://127.0.0.1:1", "-spawn"}, "excludes -spawn"},
		{[]string{"fanout", "-cluster", "3", "-targets", "http://127.0.0.1:1"}, "exclude each other"},
		{[]string{"unicast", "-api-nodes", "1"}, "give -cluster N or -targets"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		err := benchCmd(context.Background(), c.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error()+errOut.String(), c.wantErr) {
			t.Errorf("%v: error %v (stderr %q), want one containing %q", c.args, err, errOut.String(), c.wantErr)
		}
	}
}
