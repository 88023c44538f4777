package web

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
)

// Setting is one line of the read-only settings page.
type Setting struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Redacted bool   `json:"redacted,omitempty"`
}

// Redacted is what the console shows instead of a secret.
const Redacted = "REDACTED"

// secretWords mark a configuration key whose value is secret; harmless
// marks a key that only describes one (its file, encoding, length).
var (
	secretWords = []string{"password", "passwd", "passphrase", "secret", "token", "hash", "private", "psk", "pps", "master", "credential", "credentials", "key", "apikey"}
	harmless    = []string{"file", "path", "dir", "form", "encoding", "length", "len", "ttl", "port", "size", "count", "time", "kib", "memory", "threads", "rounds", "listen"}
)

// secretKey reports whether a setting named key (its last dotted part,
// split at '_' and '-') names a secret: a token from secretWords, unless
// the last token says it only describes one ("key_file", "psk_encoding").
func secretKey(key string) bool {
	k := strings.ToLower(key)
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		k = k[i+1:]
	}
	toks := strings.FieldsFunc(k, func(r rune) bool { return r == '_' || r == '-' })
	if len(toks) == 0 || slices.Contains(harmless, toks[len(toks)-1]) {
		return false
	}
	for _, t := range toks {
		if slices.Contains(secretWords, t) {
			return true
		}
	}
	return false
}

// redactURL hides the password of a URL's user info or password query
// parameter (a PostgreSQL DSN).
func redactURL(v string) string {
	if !strings.Contains(v, "://") {
		return v
	}
	u, err := url.Parse(v)
	if err != nil {
		if strings.Contains(v, "@") {
			return Redacted
		}
		return v
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Redacted)
		}
	}
	q := u.Query()
	changed := false
	for k := range q {
		if secretKey(k) {
			q.Set(k, Redacted)
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// NewSetting makes a setting, redacting it when its key names a secret
// and hiding URL passwords in any value.
func NewSetting(key, value string) Setting {
	if secretKey(key) {
		if value == "" {
			return Setting{Key: key, Value: "(not set)"}
		}
		return Setting{Key: key, Value: Redacted, Redacted: true}
	}
	if r := redactURL(value); r != value {
		return Setting{Key: key, Value: r, Redacted: true}
	}
	return Setting{Key: key, Value: value}
}

// SettingsFrom flattens a configuration struct into settings named by
// their mapstructure tags (else the lower-cased field name), joined with
// dots, in field order, secrets redacted as NewSetting does.
func SettingsFrom(v any) []Setting {
	var out []Setting
	flatten(reflect.ValueOf(v), "", &out, 0)
	return out
}

func flatten(v reflect.Value, prefix string, out *[]Setting, depth int) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			*out = append(*out, NewSetting(prefix, ""))
			return
		}
		v = v.Elem()
	}
	if v.Kind() == reflect.Struct && depth < 8 {
		if s, ok := v.Interface().(fmt.Stringer); ok && prefix != "" {
			*out = append(*out, NewSetting(prefix, s.String()))
			return
		}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			flatten(v.Field(i), key, out, depth+1)
		}
		return
	}
	var val string
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		parts := make([]string, 0, v.Len())
		for i := range v.Len() {
			parts = append(parts, fmt.Sprint(v.Index(i).Interface()))
		}
		val = strings.Join(parts, ", ")
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int {
			return strings.Compare(fmt.Sprint(a.Interface()), fmt.Sprint(b.Interface()))
		})
		for _, k := range keys {
			flatten(v.MapIndex(k), prefix+"."+fmt.Sprint(k.Interface()), out, depth+1)
		}
		return
	default:
		if v.IsValid() && v.CanInterface() {
			val = fmt.Sprint(v.Interface())
		}
	}
	*out = append(*out, NewSetting(prefix, val))
}
