//go:build !unix

package storetest

import (
	"errors"
	"os/exec"
)

type osUser struct{ uid, gid int }

func lookupPostgresUser() (*osUser, error) {
	return nil, errors.New("running the server as another user needs a Unix system")
}

func runAs(*exec.Cmd, *osUser) {}
