package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	goyaml "go.yaml.in/yaml/v3"

	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/profiles"
)

// EnvPrefix starts every environment variable Bulkhead reads.
const EnvPrefix = "BULKHEAD_"

// EnvConfig names the config file, like --config.
const EnvConfig = EnvPrefix + "CONFIG"

// envReserved are BULKHEAD_ variables that are not configuration keys:
// the config file's path, and the test harness's own namespace.
var envReserved = []string{EnvConfig}

const envTestPrefix = EnvPrefix + "TEST_"

// EnvAliases maps the short environment names of CONTRACT.md to their keys.
var EnvAliases = map[string]string{
	"BULKHEAD_PROFILE":              "profile",
	"BULKHEAD_ISOLATION":            "isolation.strategy",
	"BULKHEAD_DATABASE_URL":         "database.url",
	"BULKHEAD_MIGRATE_DATABASE_URL": "database.migrate_url",
	"BULKHEAD_HTTP_ADDR":            "http.addr",
	"BULKHEAD_ADMIN_TOKEN":          "admin.token",
	"BULKHEAD_LOG_FORMAT":           "log.format",
}

// Flag is one command-line flag the user set, already mapped to its key.
type Flag struct {
	Name  string // as typed, without dashes
	Key   string
	Value string
}

// Input is what Load reads besides the built-in defaults and the profiles.
type Input struct {
	// File is the YAML file of --config; empty falls back to BULKHEAD_CONFIG.
	File string
	// Env is the process environment, as os.Environ returns it.
	Env []string
	// Flags are the flags the user set.
	Flags []Flag
	// Strategies are the isolation strategies of this build (app.Strategies):
	// the values isolation.strategy may take, and whose configurations
	// are read from the keys under isolation.<name>.
	Strategies []isolation.Descriptor
}

// Loaded is a validated configuration and where each of its values came from.
type Loaded struct {
	Config *Config
	// Sources maps every key to the layer that set it: "default",
	// "profile saas", "file PATH", "env NAME" or "flag --NAME".
	Sources map[string]string
	values  *koanf.Koanf
}

// Entry is one key of the effective configuration.
type Entry struct {
	Key    string `json:"key"`
	Value  any    `json:"value"`
	Source string `json:"source"`
}

// Entries lists every key, sorted, with secrets redacted.
func (l *Loaded) Entries() []Entry {
	keys := l.values.Keys()
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		out = append(out, Entry{Key: k, Value: redact(k, l.values.Get(k)), Source: l.Sources[k]})
	}
	return out
}

// layer is one source of keys.
type layer struct {
	k      *koanf.Koanf
	source func(key string) string
}

// New builds and validates the configuration from in. It is the fx provider
// of *Config.
func New(in Input) (*Config, error) {
	l, err := Load(in)
	if err != nil {
		return nil, err
	}
	return l.Config, nil
}

// Load builds the configuration from its layers, later winning: built-in
// defaults, the profile, the YAML file, the environment, the flags. It
// returns an *Error naming every unknown key, every value of the wrong type
// and every invalid setting, each with the layer it came from.
func Load(in Input) (*Loaded, error) {
	var problems Error
	leaves := leafTypes(in.Strategies)

	def := koanf.New(".")
	mustLoad(def, confmap.Provider(defaults(in.Strategies), "."), nil)
	defLayer := layer{k: def, source: func(string) string { return "default" }}

	file := in.File
	if file == "" {
		file = lookupEnv(in.Env, EnvConfig)
	}
	fileLayer := layer{k: koanf.New("."), source: func(string) string { return "file " + file }}
	if file != "" {
		b, err := os.ReadFile(file)
		switch {
		case err != nil:
			problems.addFrom("config", "--config or "+EnvConfig, fmt.Sprintf("cannot read %s: %v", file, errors.Unwrap(err)))
		default:
			if err := fileLayer.k.Load(rawbytes.Provider(b), yaml.Parser()); err != nil {
				problems.addFrom("config", "file "+file, "not valid YAML: "+err.Error())
			}
		}
	}

	envLayer := fromEnv(in.Env, leaves, &problems)
	flagLayer := layer{k: koanf.New("."), source: func(key string) string {
		for _, f := range in.Flags {
			if f.Key == key {
				return "flag --" + f.Name
			}
		}
		return "flag"
	}}
	flagVals := map[string]any{}
	for _, f := range in.Flags {
		flagVals[f.Key] = f.Value
	}
	mustLoad(flagLayer.k, confmap.Provider(flagVals, "."), nil)

	// The profile is chosen by the layers above it.
	profile := profiles.Default
	for _, l := range []layer{fileLayer, envLayer, flagLayer} {
		if v := l.k.String("profile"); l.k.Exists("profile") {
			profile = v
		}
	}
	profLayer := layer{k: koanf.New("."), source: func(string) string { return "profile " + profile }}
	if b, err := profiles.YAML(profile); err == nil {
		mustLoad(profLayer.k, rawbytes.Provider(b), yaml.Parser())
	}

	layers := []layer{defLayer, profLayer, fileLayer, envLayer, flagLayer}
	merged := koanf.New(".")
	sources := map[string]string{}
	for _, l := range layers {
		for _, key := range l.k.Keys() {
			src := l.source(key)
			if !checkKey(leaves, key, l.k.Get(key), src, &problems) {
				l.k.Delete(key)
				continue
			}
			sources[key] = src
		}
		if err := merged.Merge(l.k); err != nil {
			return nil, fmt.Errorf("merge configuration: %w", err)
		}
	}

	fillItemDefaults(merged, "oidc.issuers", issuerDefaults)

	// Bad keys were dropped above, so the rest still decodes and is
	// validated: every problem is reported at once.
	var cfg Config
	err := merged.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{DecoderConfig: decoderConfig(&cfg)})
	if err == nil {
		err = loadStrategies(merged, &cfg, in.Strategies)
	}
	if err != nil {
		problems.add("config", err.Error())
	} else if err := cfg.Validate(); err != nil {
		var e *Error
		errors.As(err, &e)
		for _, p := range e.Problems {
			if src := sourceOf(sources, p.Key); src != "default" {
				p.Source = src
			}
			problems.Problems = append(problems.Problems, p)
		}
	}
	if err := problems.err(); err != nil {
		return nil, err
	}
	return &Loaded{Config: &cfg, Sources: sources, values: merged}, nil
}

// loadStrategies fills cfg.Isolation from the strategies' sections of k.
func loadStrategies(k *koanf.Koanf, cfg *Config, strategies []isolation.Descriptor) error {
	cfg.Isolation.Settings = map[string]isolation.Config{}
	for _, d := range strategies {
		cfg.Isolation.Strategies = append(cfg.Isolation.Strategies, d.Name)
		if d.Config == nil {
			cfg.Isolation.Settings[d.Name] = nil
			continue
		}
		sc := d.Config()
		if err := k.UnmarshalWithConf(strategyPrefix+d.Name, sc, koanf.UnmarshalConf{DecoderConfig: decoderConfig(sc)}); err != nil {
			return fmt.Errorf("%s%s: %w", strategyPrefix, d.Name, err)
		}
		cfg.Isolation.Settings[d.Name] = sc
	}
	return nil
}

// strategyPrefix starts the keys of a strategy's own configuration.
const strategyPrefix = "isolation."

// fillItemDefaults sets, in every item of the list at key, the defaults the
// item does not set itself.
func fillItemDefaults(k *koanf.Koanf, key string, defs map[string]any) {
	list, ok := k.Get(key).([]any)
	if !ok || len(list) == 0 {
		return
	}
	out := make([]any, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			out[i] = item
			continue
		}
		c := make(map[string]any, len(m)+len(defs))
		for k, v := range defs {
			c[k] = v
		}
		for k, v := range m {
			c[k] = v
		}
		out[i] = c
	}
	mustSet(k, key, out)
}

func mustSet(k *koanf.Koanf, key string, v any) {
	if err := k.Set(key, v); err != nil {
		panic(err) // an in-memory map: cannot fail
	}
}

// sourceOf finds the source of key, or of the list it is an element of.
func sourceOf(sources map[string]string, key string) string {
	if i := strings.IndexByte(key, '['); i >= 0 {
		key = key[:i]
	}
	return sources[key]
}

// SecretKeys are the keys whose value may instead be read from a file: the
// environment variable NAME_FILE, for any NAME that sets the key, names the
// file (a mounted Kubernetes or Docker secret), so that the secret is in no
// process environment.
var SecretKeys = []string{"database.url", "database.migrate_url", "admin.token"}

// EnvFileSuffix ends the name of a variable that names a secret's file.
const EnvFileSuffix = "_FILE"

// envKey is the key a BULKHEAD_ variable name sets: its alias, or the key
// path in capitals with __ between levels.
func envKey(name string) string {
	if key, alias := EnvAliases[name]; alias {
		return key
	}
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), "__", "."))
}

// secretFileKey returns the secret key that the variable name sets from a
// file, if it is one.
func secretFileKey(name string) (string, bool) {
	base, ok := strings.CutSuffix(name, EnvFileSuffix)
	if !ok {
		return "", false
	}
	key := envKey(base)
	return key, slices.Contains(SecretKeys, key)
}

// fromEnv maps BULKHEAD_ variables to keys: the short aliases, and otherwise
// the key path in capitals with __ between levels. Unknown names are problems.
// A secret key may instead come from the file NAME_FILE names; setting it both
// ways is a problem, not a precedence.
func fromEnv(env []string, leaves map[string]reflect.Type, problems *Error) layer {
	vals := map[string]any{}
	names := map[string]string{}
	var files []string // NAME=PATH of the secret files, read after the rest
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || slices.Contains(envReserved, name) || strings.HasPrefix(name, envTestPrefix) {
			continue
		}
		if _, secret := secretFileKey(name); secret {
			files = append(files, kv)
			continue
		}
		key := envKey(name)
		t, known := leaves[key]
		if !known {
			problems.addFrom(key, "env "+name, "unknown configuration key")
			continue
		}
		var v any = val
		if k := t.Kind(); k == reflect.Slice || k == reflect.Struct || k == reflect.Map {
			// Structured values come from the environment as YAML (or JSON).
			var parsed any
			if err := goyaml.Unmarshal([]byte(val), &parsed); err != nil {
				problems.addFrom(key, "env "+name, "not valid YAML: "+err.Error())
				continue
			}
			v = parsed
		}
		vals[key] = v
		names[key] = name
	}
	for _, kv := range files {
		name, path, _ := strings.Cut(kv, "=")
		key, _ := secretFileKey(name)
		if other, set := names[key]; set {
			problems.addFrom(key, "env "+name, fmt.Sprintf("set by both %s and %s: use one", other, name))
			delete(vals, key)
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			problems.addFrom(key, "env "+name, fmt.Sprintf("cannot read %s: %v", path, errors.Unwrap(err)))
			continue
		}
		// A file written by `echo` or an editor ends in a newline that is
		// no part of the secret.
		vals[key] = strings.TrimRight(string(b), "\r\n")
		names[key] = name
	}
	l := layer{k: koanf.New("."), source: func(key string) string { return "env " + names[key] }}
	mustLoad(l.k, confmap.Provider(vals, "."), nil)
	return l
}

// checkKey reports whether key is a known key whose value has the right type.
func checkKey(leaves map[string]reflect.Type, key string, val any, source string, problems *Error) bool {
	t, ok := leaves[key]
	if !ok {
		if val == nil && isParent(leaves, key) {
			return false // an empty section such as "isolation:" sets nothing
		}
		problems.addFrom(key, source, "unknown configuration key")
		return false
	}
	dst := reflect.New(t)
	dc := decoderConfig(dst.Interface())
	dc.ErrorUnused = true
	d, err := mapstructure.NewDecoder(dc)
	if err == nil {
		err = d.Decode(val)
	}
	if err != nil {
		msg := fmt.Sprintf("want %s, not %s", describe(t), shown(val))
		if k := t.Kind(); k == reflect.Slice || k == reflect.Map {
			// Say which item and field is wrong rather than repeat the value.
			msg = fmt.Sprintf("want %s: %s", describe(t), oneLine(err))
		}
		problems.addFrom(key, source, msg)
		return false
	}
	return true
}

// oneLine flattens mapstructure's multi-line error into one line.
func oneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "* "))
		if l != "" && !strings.HasSuffix(l, "error(s) decoding:") && !strings.HasSuffix(l, "error(s):") {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, ", ")
}

func decoderConfig(result any) *mapstructure.DecoderConfig {
	return &mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.StringToTimeDurationHookFunc(),
		WeaklyTypedInput: true,
		TagName:          "koanf",
		Result:           result,
	}
}

func shown(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%v", v)
}

func describe(t reflect.Type) string {
	switch {
	case t.String() == "time.Duration":
		return "a duration such as 2s"
	case t.Kind() == reflect.Int:
		return "an integer"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Slice:
		return "a list"
	}
	return "a " + t.Kind().String()
}

func isParent(leaves map[string]reflect.Type, key string) bool {
	for k := range leaves {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

// leafTypes maps every settable key to its Go type, from the koanf tags
// of Config and of the strategies' configurations.
func leafTypes(strategies []isolation.Descriptor) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for f := range t.Fields() {
			tag := f.Tag.Get("koanf")
			if tag == "-" || !f.IsExported() {
				continue
			}
			key := prefix + tag
			if f.Type.Kind() == reflect.Struct && f.Type.String() != "time.Duration" {
				walk(key+".", f.Type)
				continue
			}
			out[key] = f.Type
		}
	}
	walk("", reflect.TypeFor[Config]())
	for _, d := range strategies {
		if d.Config != nil {
			walk(strategyPrefix+d.Name+".", reflect.TypeOf(d.Config()))
		}
	}
	return out
}

// strategyDefaults adds to out the defaults of every strategy's
// configuration, keyed as leafTypes keys them, in the forms a YAML file
// would give them (durations as "2s", lists as []any).
func strategyDefaults(strategies []isolation.Descriptor, out map[string]any) {
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "-" || !f.IsExported() {
				continue
			}
			key, fv := prefix+tag, v.Field(i)
			switch {
			case f.Type == reflect.TypeFor[time.Duration]():
				out[key] = shortDuration(time.Duration(fv.Int()))
			case f.Type.Kind() == reflect.Struct:
				walk(key+".", fv)
			case f.Type.Kind() == reflect.Slice:
				list := make([]any, fv.Len())
				for j := range list {
					list[j] = fv.Index(j).Interface()
				}
				out[key] = list
			default:
				out[key] = fv.Interface()
			}
		}
	}
	for _, d := range strategies {
		if d.Config != nil {
			walk(strategyPrefix+d.Name+".", reflect.ValueOf(d.Config()))
		}
	}
}

// shortDuration formats d as a configuration file would: 5m, not 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Keys lists every configuration key, those of strategies included,
// sorted.
func Keys(strategies ...isolation.Descriptor) []string {
	leaves := leafTypes(strategies)
	keys := make([]string, 0, len(leaves))
	for k := range leaves {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// EnvName is the environment variable that sets key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "__"))
}

func lookupEnv(env []string, name string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

func mustLoad(k *koanf.Koanf, p koanf.Provider, pa koanf.Parser) {
	if err := k.Load(p, pa); err != nil {
		panic(err) // in-memory maps and embedded profiles: cannot fail
	}
}
