package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

// The optional steps of spec §6, both off unless Options asks for them:
//
// Step 8 adds Options.Users as digest users with AddUserAclEntryEx. Each
// gets a password of its own per machine, generated like the admin
// password and saved sealed in the machine's progress before any device
// call uses it (UserPasswords reads them back). The step reads first
// (EnumerateUserAclEntries, GetUserAclEntryEx) and adds only the users the
// device lacks, so a run resumed after a lost reply does not add twice.
// The other half of step 8, Put AMT_KerberosSettingData, is not
// implemented and will not be: a kiosk site is offline and has no KDC, so
// there is no realm to point AMT at (and no Kerberos SIDs to add).
//
// Step 10 hands the machine the next PID/PPS with SetTLSPSK so that after
// a partial unprovision it says hello with that PID and is provisioned
// again through the normal path. The entry is drawn and recorded as
// consumed by this machine (store.GiveNextPSK) before the call, in one
// transaction; a resumed run gets the same entry back. The wire encoding
// of PID and PPS is UNCONFIRMED (spec §6 step 10 [U]): Options.PSKEncoding
// chooses it, and the simulator mirrors the same switch.

// User is an extra digest user for step 8.
type User struct {
	Name   string // 1–16 characters of 7-bit ASCII, not "admin"
	Access wsman.AccessPermission
	Realms []wsman.Realm
}

// ErrUsers reports an unusable Options.Users.
var ErrUsers = errors.New("provision: invalid users")

// CheckUsers validates users as New does (for configuration loaders).
func CheckUsers(us []User) error { return checkUsers(us) }

// checkUsers validates the configured users.
func checkUsers(us []User) error {
	seen := map[string]bool{}
	for i, u := range us {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("user %d (%q): %s: %w", i+1, u.Name, fmt.Sprintf(format, a...), ErrUsers)
		}
		if u.Name == "" || len(u.Name) > wsman.MaxUserNameLen {
			return bad("name must be 1 to %d characters", wsman.MaxUserNameLen)
		}
		for j := 0; j < len(u.Name); j++ {
			if c := u.Name[j]; c < 0x21 || c > 0x7e || c == ':' || c == '"' {
				return bad("name must be printable 7-bit ASCII without spaces, ':' or '\"'")
			}
		}
		if strings.EqualFold(u.Name, "admin") {
			return bad("the admin user is step 7's")
		}
		if seen[u.Name] {
			return bad("listed twice")
		}
		seen[u.Name] = true
		if u.Access > wsman.AccessAny {
			return bad("access permission %d", uint32(u.Access))
		}
		if len(u.Realms) == 0 {
			return bad("no realms")
		}
		for _, r := range u.Realms {
			if !r.Valid() {
				return bad("realm %d", uint32(r))
			}
		}
	}
	return nil
}

// runSecrets is the sealed part of a machine's progress. The admin
// password alone is stored as its bytes (the form before step 8 existed);
// with user passwords it is a 0 byte, which no password contains, then
// JSON.
type runSecrets struct {
	Admin string            `json:"admin"`
	Users map[string]string `json:"users,omitempty"`
}

func encodeSecrets(admin setupbin.Password, users map[string]setupbin.Password) []byte {
	if len(users) == 0 && admin != "" && admin[0] != 0 {
		return []byte(admin)
	}
	s := runSecrets{Admin: admin.Reveal(), Users: map[string]string{}}
	for n, p := range users {
		s.Users[n] = p.Reveal()
	}
	b, _ := json.Marshal(s) // strings only: cannot fail
	return append([]byte{0}, b...)
}

func decodeSecrets(b []byte) (setupbin.Password, map[string]setupbin.Password, error) {
	if len(b) == 0 || b[0] != 0 {
		return setupbin.Password(b), nil, nil
	}
	var s runSecrets
	if err := json.Unmarshal(b[1:], &s); err != nil {
		return "", nil, errors.New("sealed progress secrets are malformed") // no detail: it would quote secrets
	}
	users := make(map[string]setupbin.Password, len(s.Users))
	for n, p := range s.Users {
		users[n] = setupbin.Password(p)
	}
	return setupbin.Password(s.Admin), users, nil
}

// UserPasswords returns the passwords the kiosk generated for the step 8
// users of the machine holding pid (for the technician, tests).
func UserPasswords(ctx context.Context, s *store.Store, pid setupbin.PID) (map[string]setupbin.Password, error) {
	p, err := s.LoadProgress(ctx, pid)
	if err != nil {
		return nil, err
	}
	_, users, err := decodeSecrets(p.Secret)
	if err != nil {
		return nil, fmt.Errorf("progress of %s: %w", pid, err)
	}
	return users, nil
}

// newUserPasswords generates a password for each configured user that has
// none yet; it reports whether it made any (they must be saved before
// use).
func (r *run) newUserPasswords() (bool, error) {
	made := false
	for _, u := range r.p.o.Users {
		if _, ok := r.userPw[u.Name]; ok {
			continue
		}
		pw, err := setupbin.GenerateMEBxPassword(r.p.o.Rand, r.p.o.PasswordLength)
		if err != nil {
			return false, fmt.Errorf("generating the password of user %q: %w", u.Name, err)
		}
		if r.userPw == nil {
			r.userPw = map[string]setupbin.Password{}
		}
		r.userPw[u.Name], made = pw, true
	}
	return made, nil
}

// Step 8: read the user ACL, add the configured users it lacks.
func (r *run) users(ctx context.Context) error {
	hs, err := r.c.EnumerateUserAclEntries(ctx)
	if err != nil {
		return fmt.Errorf("EnumerateUserAclEntries: %w", err)
	}
	present := map[string]bool{}
	for _, h := range hs {
		e, err := r.c.GetUserAclEntryEx(ctx, h)
		if err != nil {
			return fmt.Errorf("GetUserAclEntryEx(%d): %w", h, err)
		}
		present[e.DigestUsername] = true
	}
	realm := r.realm()
	var added, kept, dup []string
	for _, u := range r.p.o.Users {
		if present[u.Name] {
			kept = append(kept, u.Name)
			continue
		}
		pw, ok := r.userPw[u.Name]
		if !ok {
			return &Failure{Class: ClassKiosk, Step: StepUsers, Err: fmt.Errorf("no saved password for user %q", u.Name)}
		}
		in := wsman.AddUserAclEntryExInput{DigestUsername: u.Name, DigestPassword: wsman.DigestPassword(u.Name, realm, wsman.Secret(pw.Reveal())),
			AccessPermission: uint32(u.Access)}
		for _, rl := range u.Realms {
			in.Realms = append(in.Realms, uint32(rl))
		}
		if _, err := r.c.AddUserAclEntryEx(ctx, in); errors.Is(err, wsman.StatusDuplicate) {
			dup = append(dup, u.Name) // appeared since the enumeration
			continue
		} else if err != nil {
			return fmt.Errorf("AddUserAclEntryEx(%s): %w", u.Name, err)
		}
		added = append(added, u.Name)
	}
	note := "step 8: users added: " + orNone(added)
	if len(kept) > 0 {
		note += "; present already (kept): " + strings.Join(kept, ", ")
	}
	if len(dup) > 0 {
		note += "; refused as duplicates (kept): " + strings.Join(dup, ", ")
	}
	return r.save(ctx, note)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(slices.Clone(s), ", ")
}

// Step 10: draw (or find again) the next entry, then SetTLSPSK.
func (r *run) nextPSK(ctx context.Context) error {
	e, given, err := r.p.o.Store.GiveNextPSK(ctx, store.NextPSKSpec{From: r.pid, Machine: r.j.UUID, Password: r.password})
	if errors.Is(err, store.ErrPoolExhausted) {
		return &Failure{Class: ClassPoolExhausted, Step: StepNextPSK, Err: err}
	}
	if err != nil {
		return &Failure{Class: ClassKiosk, Step: StepNextPSK, Err: err}
	}
	if !given && r.pr.NextPID != e.PID.String() {
		r.log.Info("step 10: reusing the next PID/PPS given to this machine before", "next_pid", e.PID.String())
	}
	r.pr.NextPID = e.PID.String()
	if err := r.c.SetTLSPSK(ctx, e.PID.String(), wsman.Secret(e.PPS.Reveal())); err != nil {
		return fmt.Errorf("SetTLSPSK(%s): %w", e.PID, err)
	}
	return r.save(ctx, fmt.Sprintf("step 10: SetTLSPSK sent next PID %s (encoding %s, unconfirmed on hardware)", e.PID, r.p.o.PSKEncoding))
}

// realm is the device's Digest realm, from step 1 or the login.
func (r *run) realm() string {
	if r.pr.Realm != "" {
		return r.pr.Realm
	}
	return r.c.Realm()
}
