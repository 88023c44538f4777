package wsman

import (
	"context"
	"fmt"
	"strings"
)

// The user ACL of AMT_AuthorizationService (spec §6 step 8), beyond
// AddUserAclEntryEx in amt.go: realm and access-permission numbers,
// EnumerateUserAclEntries and GetUserAclEntryEx. Numbers and parameter
// names follow the Intel AMT SDK class reference of
// AMT_AuthorizationService.

// AccessPermission is the AccessPermission of a user ACL entry: from which
// interface the user may reach AMT.
type AccessPermission uint32

// Access permissions (SDK ValueMap {0, 1, 2}).
const (
	AccessLocal   AccessPermission = 0 // LocalAccessPermission: the host OS only
	AccessNetwork AccessPermission = 1 // NetworkAccessPermission
	AccessAny     AccessPermission = 2 // AnyAccessPermission
)

var accessNames = []string{"local", "network", "any"}

func (a AccessPermission) String() string {
	if int(a) < len(accessNames) {
		return accessNames[a]
	}
	return fmt.Sprintf("AccessPermission(%d)", uint32(a))
}

// ParseAccessPermission parses "local", "network" or "any".
func ParseAccessPermission(s string) (AccessPermission, error) {
	for i, n := range accessNames {
		if strings.EqualFold(s, n) {
			return AccessPermission(i), nil
		}
	}
	return 0, fmt.Errorf("access permission %q: want local, network or any", s)
}

// Realm is an AMT realm number: a group of functions a user may call.
type Realm uint32

// Realms a user ACL entry may name (SDK ValueMap of Realms; 0 is
// InvalidRealm, 1, 22 and 23 are reserved and not offered here).
// AuditLogRealm and ACLRealm exist from AMT 4.0.
const (
	RealmRedirection                Realm = 2
	RealmPTAdministration           Realm = 3
	RealmHardwareAsset              Realm = 4
	RealmRemoteControl              Realm = 5
	RealmStorage                    Realm = 6
	RealmEventManager               Realm = 7
	RealmStorageAdmin               Realm = 8
	RealmAgentPresenceLocal         Realm = 9
	RealmAgentPresenceRemote        Realm = 10
	RealmCircuitBreaker             Realm = 11
	RealmNetworkTime                Realm = 12
	RealmGeneralInfo                Realm = 13
	RealmFirmwareUpdate             Realm = 14
	RealmEIT                        Realm = 15
	RealmLocalUN                    Realm = 16
	RealmEndpointAccessControl      Realm = 17
	RealmEndpointAccessControlAdmin Realm = 18
	RealmEventLogReader             Realm = 19
	RealmAuditLog                   Realm = 20
	RealmACL                        Realm = 21
	RealmLocalSystem                Realm = 24
)

// realmNames are the configuration names of the realms: the SDK names
// without "Realm", lower case, words joined by "-".
var realmNames = map[Realm]string{
	RealmRedirection:                "redirection",
	RealmPTAdministration:           "pt-administration",
	RealmHardwareAsset:              "hardware-asset",
	RealmRemoteControl:              "remote-control",
	RealmStorage:                    "storage",
	RealmEventManager:               "event-manager",
	RealmStorageAdmin:               "storage-admin",
	RealmAgentPresenceLocal:         "agent-presence-local",
	RealmAgentPresenceRemote:        "agent-presence-remote",
	RealmCircuitBreaker:             "circuit-breaker",
	RealmNetworkTime:                "network-time",
	RealmGeneralInfo:                "general-info",
	RealmFirmwareUpdate:             "firmware-update",
	RealmEIT:                        "eit",
	RealmLocalUN:                    "local-un",
	RealmEndpointAccessControl:      "endpoint-access-control",
	RealmEndpointAccessControlAdmin: "endpoint-access-control-admin",
	RealmEventLogReader:             "event-log-reader",
	RealmAuditLog:                   "audit-log",
	RealmACL:                        "acl",
	RealmLocalSystem:                "local-system",
}

func (r Realm) String() string {
	if n, ok := realmNames[r]; ok {
		return n
	}
	return fmt.Sprintf("Realm(%d)", uint32(r))
}

// Valid reports whether r is a realm a user entry may name.
func (r Realm) Valid() bool { _, ok := realmNames[r]; return ok }

// ParseRealm parses a realm name ("redirection", "hardware-asset", …; see
// realmNames) or its number.
func ParseRealm(s string) (Realm, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for r, n := range realmNames {
		if n == t || fmt.Sprint(uint32(r)) == t {
			return r, nil
		}
	}
	return 0, fmt.Errorf("realm %q: unknown (want a name such as redirection, remote-control, hardware-asset, pt-administration)", s)
}

// RealmNames lists the realm names ParseRealm knows, in number order.
func RealmNames() []string {
	out := make([]string, 0, len(realmNames))
	for r := Realm(0); r <= RealmLocalSystem; r++ {
		if n, ok := realmNames[r]; ok {
			out = append(out, n)
		}
	}
	return out
}

// MaxUserNameLen is the longest DigestUsername AMT accepts (7-bit ASCII).
const MaxUserNameLen = 16

// EnumerateUserAclEntriesInput is the input of EnumerateUserAclEntries.
type EnumerateUserAclEntriesInput struct {
	StartIndex uint32 `xml:"StartIndex"` // 1-based
}

// EnumerateUserAclEntriesOutput is one page of user entry handles.
type EnumerateUserAclEntriesOutput struct {
	TotalCount uint32   `xml:"TotalCount"`
	Handles    []uint32 `xml:"Handles"`
}

// EnumerateUserAclEntries returns the handles of every user ACL entry (the
// admin entry is not among them), asking page by page from StartIndex 1
// until TotalCount handles arrived or a page is empty. The device's
// TotalCount is not trusted for sizing: at most maxUserAclPages pages.
func (c *Client) EnumerateUserAclEntries(ctx context.Context) ([]uint32, error) {
	var all []uint32
	for range maxUserAclPages {
		var out EnumerateUserAclEntriesOutput
		in := EnumerateUserAclEntriesInput{StartIndex: uint32(len(all) + 1)}
		if err := c.Invoke(ctx, URIAuthorizationService, "EnumerateUserAclEntries", nil, in, &out); err != nil {
			return nil, err
		}
		all = append(all, out.Handles...)
		if len(out.Handles) == 0 || uint32(len(all)) >= out.TotalCount {
			return all, nil
		}
	}
	return nil, fmt.Errorf("wsman AMT_AuthorizationService.EnumerateUserAclEntries: %w: more than %d pages", ErrMalformed, maxUserAclPages)
}

const maxUserAclPages = 64

// GetUserAclEntryExInput is the input of GetUserAclEntryEx.
type GetUserAclEntryExInput struct {
	Handle uint32 `xml:"Handle"`
}

// UserAclEntry is the output of GetUserAclEntryEx: a digest user (or a
// Kerberos SID) with its access permission and realms. The password is
// never readable.
type UserAclEntry struct {
	DigestUsername   string   `xml:"DigestUsername,omitempty"`
	KerberosUserSid  string   `xml:"KerberosUserSid,omitempty"`
	AccessPermission uint32   `xml:"AccessPermission"`
	Realms           []uint32 `xml:"Realms"`
}

// GetUserAclEntryEx reads the user entry with the given handle
// (StatusInvalidHandle when there is none).
func (c *Client) GetUserAclEntryEx(ctx context.Context, handle uint32) (*UserAclEntry, error) {
	var out UserAclEntry
	if err := c.Invoke(ctx, URIAuthorizationService, "GetUserAclEntryEx", nil, GetUserAclEntryExInput{Handle: handle}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
