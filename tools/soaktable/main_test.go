package main

import (
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	in := `{"loop":"store kill -9 (sqlite)","runs":20,"faults":20,"lost":0,"duplicates":0}
{"loop":"kiosk kill -9","runs":10,"faults":10,"lost":0,"duplicates":0,"provisioned":200}
`
	var b strings.Builder
	ok, err := table(&b, strings.NewReader(in), "store kill -9,kiosk")
	if err != nil || !ok {
		t.Fatalf("ok %v err %v\n%s", ok, err, b.String())
	}
	if !strings.Contains(b.String(), "total") || !strings.Contains(b.String(), "200") {
		t.Errorf("table:\n%s", b.String())
	}
	b.Reset()
	if ok, _ := table(&b, strings.NewReader(in+`{"loop":"agent power cut","runs":1,"faults":1,"lost":1}`+"\n"), ""); ok {
		t.Errorf("a lost entry passed")
	}
	if ok, _ := table(&b, strings.NewReader(in), "agent power cut"); ok || !strings.Contains(b.String(), "missing") {
		t.Errorf("a missing loop passed:\n%s", b.String())
	}
	if _, err := table(&b, strings.NewReader("{nope\n"), ""); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad line: %v", err)
	}
}
