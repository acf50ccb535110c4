// Package helm tests the Bulkhead Helm chart offline: it renders every
// profile with the Helm SDK, decodes each object strictly into its
// Kubernetes API type, and checks what operators rely on — the restricted
// security context, probes, the migration hook, autoscaling, checksums that
// roll pods, and that the chart speaks only CONTRACT.md's configuration.
package helm

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "bulkhead"
	releaseName = "bulkhead"
	namespace   = "bulkhead"
	// kubeVersion is the oldest Kubernetes the chart supports (Chart.yaml).
	kubeVersion = "v1.30.0"

	hookAnnotation       = "helm.sh/hook"
	hookWeightAnnotation = "helm.sh/hook-weight"
	hookDeleteAnnotation = "helm.sh/hook-delete-policy"
)

// kinds are the API types the chart may render; anything else fails.
var kinds = map[string]func() metav1.Object{
	"v1/ConfigMap":                           func() metav1.Object { return &corev1.ConfigMap{} },
	"v1/Secret":                              func() metav1.Object { return &corev1.Secret{} },
	"v1/Service":                             func() metav1.Object { return &corev1.Service{} },
	"v1/ServiceAccount":                      func() metav1.Object { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                     func() metav1.Object { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                    func() metav1.Object { return &appsv1.StatefulSet{} },
	"batch/v1/Job":                           func() metav1.Object { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":          func() metav1.Object { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() metav1.Object { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/NetworkPolicy":     func() metav1.Object { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":           func() metav1.Object { return &networkingv1.Ingress{} },
	// Custom resources: no Go types here, so decoded loosely and checked
	// field by field in TestIngressRouteAndMonitor.
	"monitoring.coreos.com/v1/ServiceMonitor": func() metav1.Object { return &unstructured.Unstructured{} },
	"gateway.networking.k8s.io/v1/HTTPRoute":  func() metav1.Object { return &unstructured.Unstructured{} },
}

// rendered is one render of the chart, every object decoded strictly.
type rendered struct {
	objects []metav1.Object
	notes   string
}

// all returns the rendered objects of type T.
func all[T any](r *rendered) []*T {
	var out []*T
	for _, o := range r.objects {
		if v, ok := any(o).(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the single rendered object of type T, failing otherwise.
func one[T any](t *testing.T, r *rendered) *T {
	t.Helper()
	objs := all[T](r)
	if len(objs) != 1 {
		t.Fatalf("want one %T, got %d", *new(T), len(objs))
	}
	return objs[0]
}

// component returns the Deployment of the given component label, or nil.
func component(r *rendered, name string) *appsv1.Deployment {
	for _, d := range all[appsv1.Deployment](r) {
		if d.Labels["app.kubernetes.io/component"] == name {
			return d
		}
	}
	return nil
}

// serving returns the Deployment of the serving pods, failing without one.
func serving(t *testing.T, r *rendered) *appsv1.Deployment {
	t.Helper()
	d := component(r, "server")
	if d == nil {
		t.Fatal("no server Deployment")
	}
	return d
}

// named returns the rendered object of type T called name, or nil.
func named[T any](r *rendered, name string) *T {
	for _, o := range r.objects {
		if v, ok := any(o).(*T); ok && o.GetName() == name {
			return v
		}
	}
	return nil
}

// values builds nested values from dotted paths: values("a.b", 1) is
// {a: {b: 1}}.
func values(kv ...any) map[string]any {
	out := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m := out
		parts := strings.Split(kv[i].(string), ".")
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = kv[i+1]
	}
	return out
}

// merge deep-merges src into dst, src winning, as `helm -f a -f b` does.
func merge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				dst[k] = merge(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// profileFile is the values file of a profile; "" is values.yaml alone.
func profileFile(profile string) string {
	if profile == "" {
		return ""
	}
	return chartDir + "/values-" + profile + ".yaml"
}

// render renders the chart like `helm template -f file... --set ...` would,
// with values files applied in order and then the overrides. It returns the
// error of schema validation or rendering; decoding problems fail t.
func render(t *testing.T, files []string, overrides ...map[string]any) (*rendered, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	vals := map[string]any{}
	for _, f := range files {
		if f == "" {
			continue
		}
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		merge(vals, v.AsMap())
	}
	for _, o := range overrides {
		merge(vals, o)
	}

	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatalf("parse kube version: %v", err)
	}
	caps.KubeVersion = *kv
	if !chartutil.IsCompatibleRange(chrt.Metadata.KubeVersion, caps.KubeVersion.String()) {
		t.Fatalf("chart requires Kubernetes %s, not %s", chrt.Metadata.KubeVersion, caps.KubeVersion)
	}
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true}
	renderVals, err := chartutil.ToRenderValues(chrt, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	// Strict, like `helm lint --strict`: a template reading a value that
	// does not exist is an error.
	files2, err := engine.Engine{Strict: true}.Render(chrt, renderVals)
	if err != nil {
		return nil, err
	}
	return decode(t, files2), nil
}

func mustRender(t *testing.T, files []string, overrides ...map[string]any) *rendered {
	t.Helper()
	r, err := render(t, files, overrides...)
	if err != nil {
		t.Fatalf("render %v: %v", files, err)
	}
	return r
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decode splits the rendered templates into objects and decodes each one
// strictly: an unknown or duplicate field, or an unknown kind, fails t.
func decode(t *testing.T, files map[string]string) *rendered {
	t.Helper()
	r := &rendered{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if strings.HasSuffix(name, "NOTES.txt") {
			r.notes = files[name]
			continue
		}
		for i, doc := range docSeparator.Split(files[name], -1) {
			js, err := yaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Fatalf("%s document %d: %v\n%s", name, i, err, doc)
			}
			if string(js) == "null" { // empty, or only comments
				continue
			}
			var tm metav1.TypeMeta
			if err := json.Unmarshal(js, &tm); err != nil {
				t.Fatalf("%s document %d: %v", name, i, err)
			}
			newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
			if !ok {
				t.Fatalf("%s document %d: unexpected kind %s/%s", name, i, tm.APIVersion, tm.Kind)
			}
			obj := newObj()
			strictErrs, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
			if err != nil || len(strictErrs) > 0 {
				t.Fatalf("%s document %d (%s): strict decode: %v %v\n%s", name, i, tm.Kind, err, strictErrs, doc)
			}
			if obj.GetName() == "" {
				t.Fatalf("%s document %d (%s): no name", name, i, tm.Kind)
			}
			r.objects = append(r.objects, obj)
		}
	}
	return r
}

// podSpec is a pod template of some workload.
type podSpec struct {
	owner string
	meta  metav1.ObjectMeta
	spec  corev1.PodSpec
}

func podSpecs(r *rendered) []podSpec {
	var out []podSpec
	for _, d := range all[appsv1.Deployment](r) {
		out = append(out, podSpec{"Deployment/" + d.Name, d.Spec.Template.ObjectMeta, d.Spec.Template.Spec})
	}
	for _, s := range all[appsv1.StatefulSet](r) {
		out = append(out, podSpec{"StatefulSet/" + s.Name, s.Spec.Template.ObjectMeta, s.Spec.Template.Spec})
	}
	for _, j := range all[batchv1.Job](r) {
		out = append(out, podSpec{"Job/" + j.Name, j.Spec.Template.ObjectMeta, j.Spec.Template.Spec})
	}
	return out
}

func containers(spec corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(spec.InitContainers), spec.Containers...)
}

// assertRestricted checks the Kubernetes "restricted" Pod Security Standard
// and the chart's own hardening on one pod template, whose containers must
// all run as uid.
func assertRestricted(t *testing.T, p podSpec, uid int64) {
	t.Helper()
	s := p.spec
	psc := s.SecurityContext
	if psc == nil {
		t.Fatalf("%s: no pod securityContext", p.owner)
	}
	if s.HostNetwork || s.HostPID || s.HostIPC {
		t.Errorf("%s: shares a host namespace", p.owner)
	}
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false", p.owner)
	}
	if psc.FSGroup == nil || *psc.FSGroup != uid {
		t.Errorf("%s: fsGroup %v, want %d", p.owner, psc.FSGroup, uid)
	}
	for _, v := range s.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: hostPath volume %s", p.owner, v.Name)
		}
	}
	for _, c := range containers(s) {
		where := p.owner + " container " + c.Name
		csc := c.SecurityContext
		if csc == nil {
			t.Errorf("%s: no securityContext", where)
			continue
		}
		if !isTrue(csc.RunAsNonRoot, psc.RunAsNonRoot) {
			t.Errorf("%s: runAsNonRoot is not true", where)
		}
		if u := first(csc.RunAsUser, psc.RunAsUser); u == nil || *u != uid {
			t.Errorf("%s: runAsUser %v, want %d", where, u, uid)
		}
		if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if csc.Privileged != nil && *csc.Privileged {
			t.Errorf("%s: privileged", where)
		}
		if csc.Capabilities == nil || !reflect.DeepEqual(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", where, csc.Capabilities)
		}
		if sp := first(csc.SeccompProfile, psc.SeccompProfile); sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", where, sp)
		}
		if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", where)
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/tmp" }) {
			t.Errorf("%s: no writable /tmp", where)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: no memory request and limit", where)
		}
	}
	for _, m := range volumeMountsAt(s, "/tmp") {
		if m.EmptyDir == nil {
			t.Errorf("%s: /tmp is volume %s, not an emptyDir", p.owner, m.Name)
		}
	}
}

func volumeMountsAt(s corev1.PodSpec, path string) []corev1.Volume {
	var out []corev1.Volume
	for _, c := range containers(s) {
		for _, m := range c.VolumeMounts {
			if m.MountPath != path {
				continue
			}
			for _, v := range s.Volumes {
				if v.Name == m.Name {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

func isTrue(bs ...*bool) bool {
	b := first(bs...)
	return b != nil && *b
}

// first returns the first non-nil pointer: the container's setting, else
// the pod's.
func first[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// contract is what the chart may use of CONTRACT.md's configuration: the
// BULKHEAD_ environment names, and the YAML keys as dotted paths (a list's
// items as path[].key).
type contract struct {
	env  map[string]bool
	keys map[string]bool
}

var (
	envRow      = regexp.MustCompile("(?m)^\\| `(BULKHEAD_[A-Z0-9_]+)` \\|")
	yamlBlock   = regexp.MustCompile("(?s)```yaml\n(.*?)```")
	ruleExample = regexp.MustCompile("\\(`([a-z_.]+)` → `(BULKHEAD_[A-Z0-9_]+)`\\)")
)

// loadContract derives the contract from testdata's copy of CONTRACT.md's
// Configuration section: the short names of its table, plus BULKHEAD_ and
// the path in capitals with __ between levels for every key of its YAML
// shape — the rule the section states.
func loadContract(t *testing.T) contract {
	t.Helper()
	text, err := os.ReadFile("testdata/contract-configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	c := contract{env: map[string]bool{}, keys: map[string]bool{}}
	for _, m := range envRow.FindAllStringSubmatch(string(text), -1) {
		c.env[m[1]] = true
	}
	block := yamlBlock.FindSubmatch(text)
	if block == nil {
		t.Fatal("contract: no YAML shape")
	}
	var shape map[string]any
	if err := yaml.Unmarshal(block[1], &shape); err != nil {
		t.Fatalf("contract: YAML shape: %v", err)
	}
	walkKeys("", shape, func(path string, inList bool) {
		c.keys[path] = true
		if !inList {
			c.env[envName(path)] = true
		}
	})
	if len(c.env) < 10 || len(c.keys) < 10 {
		t.Fatalf("contract: found only %d names and %d keys; has the copy's format changed?", len(c.env), len(c.keys))
	}
	return c
}

// envName is a key's environment name under the contract's rule.
func envName(path string) string {
	return "BULKHEAD_" + strings.ToUpper(strings.ReplaceAll(path, ".", "__"))
}

// walkKeys calls fn for every key under v, as a dotted path; keys of list
// items are path[].key and marked inList.
func walkKeys(prefix string, v any, fn func(path string, inList bool)) {
	var walk func(prefix string, v any, inList bool)
	walk = func(prefix string, v any, inList bool) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				path := k
				if prefix != "" {
					path = prefix + "." + k
				}
				fn(path, inList)
				walk(path, sub, inList)
			}
		case []any:
			for _, item := range v {
				walk(prefix+"[]", item, true)
			}
		}
	}
	walk(prefix, v, false)
}

// secretKeys are the keys the contract lets come from a file, NAME_FILE.
var secretKeys = []string{"database.url", "database.migrate_url", "admin.token"}

// unknownEnv returns the BULKHEAD_ names among names that the contract does
// not know: its names, and NAME_FILE for the names of a secret key.
func (c contract) unknownEnv(names []string) []string {
	var out []string
	for _, n := range names {
		if base, ok := strings.CutSuffix(n, "_FILE"); ok && c.env[base] && (slices.ContainsFunc(secretKeys, func(k string) bool { return envName(k) == base }) ||
			base == "BULKHEAD_DATABASE_URL" || base == "BULKHEAD_MIGRATE_DATABASE_URL" || base == "BULKHEAD_ADMIN_TOKEN") {
			continue
		}
		if strings.HasPrefix(n, "BULKHEAD_") && !c.env[n] {
			out = append(out, n)
		}
	}
	return out
}

func envNames(specs []podSpec) []string {
	var out []string
	for _, p := range specs {
		for _, c := range containers(p.spec) {
			for _, e := range c.Env {
				out = append(out, e.Name)
			}
		}
	}
	return out
}

func TestContractDerivation(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	text, err := os.ReadFile("testdata/contract-configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	// The contract states its rule with an example; the derivation agrees.
	ex := ruleExample.FindStringSubmatch(string(text))
	if ex == nil {
		t.Fatal("contract: no example of the environment rule")
	}
	if got := envName(ex[1]); got != ex[2] {
		t.Errorf("envName(%q) = %q, contract says %q", ex[1], got, ex[2])
	}
	for _, name := range []string{"BULKHEAD_PROFILE", "BULKHEAD_CONFIG", "BULKHEAD_DATABASE__POOLER", ex[2]} {
		if !c.env[name] {
			t.Errorf("%s is not derived from the contract", name)
		}
	}
	// The check catches a name the contract does not have.
	if got := c.unknownEnv([]string{"BULKHEAD_PROFILE", "BULKHEAD_DATABASE_DSN", "PGDATA"}); !slices.Equal(got, []string{"BULKHEAD_DATABASE_DSN"}) {
		t.Errorf("unknownEnv = %v, want [BULKHEAD_DATABASE_DSN]", got)
	}
}

// configFile is the YAML config file a ConfigMap holds, as a map.
func configFile(t *testing.T, cm *corev1.ConfigMap) map[string]any {
	t.Helper()
	text, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s: no config.yaml", cm.Name)
	}
	var cfg map[string]any
	if err := yaml.UnmarshalStrict([]byte(text), &cfg); err != nil {
		t.Fatalf("ConfigMap %s: config.yaml: %v", cm.Name, err)
	}
	return cfg
}

func lookupPath(m map[string]any, path string) any {
	var v any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	tests := []struct {
		profile      string // "" is values.yaml alone
		wantProfile  string
		wantStrategy string
		wantHPA      bool
		wantJob      bool // migrations in a hook Job; else in an init container
		wantPostgres bool
	}{
		{"", "community", "rls", false, true, false},
		{"saas", "saas", "rls", true, true, false},
		{"regulated", "regulated", "schema", false, true, false},
		{"enterprise", "enterprise", "database", false, true, false},
		{"community", "community", "rls", false, false, true},
	}
	for _, tt := range tests {
		t.Run("profile="+tt.wantProfile+"/file="+profileFile(tt.profile), func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, []string{profileFile(tt.profile)})
			fullname := releaseName // the release name already holds the chart name

			// Configuration: the profile and strategy, and only contract keys.
			cfg := configFile(t, named[corev1.ConfigMap](r, fullname))
			if got := lookupPath(cfg, "profile"); got != tt.wantProfile {
				t.Errorf("config profile = %v, want %s", got, tt.wantProfile)
			}
			if got := lookupPath(cfg, "isolation.strategy"); got != tt.wantStrategy {
				t.Errorf("config isolation.strategy = %v, want %s", got, tt.wantStrategy)
			}
			if got := lookupPath(cfg, "http.addr"); got != "0.0.0.0:8080" {
				t.Errorf("config http.addr = %v, want 0.0.0.0:8080", got)
			}
			if got := lookupPath(cfg, "log.format"); got != "json" {
				t.Errorf("config log.format = %v, want json", got)
			}
			for _, cm := range all[corev1.ConfigMap](r) {
				if _, ok := cm.Data["config.yaml"]; !ok {
					continue
				}
				walkKeys("", configFile(t, cm), func(path string, _ bool) {
					if !c.keys[path] {
						t.Errorf("ConfigMap %s: key %s is not in the contract (the server would exit 2)", cm.Name, path)
					}
					if path == "database.url" || path == "database.migrate_url" || path == "admin.token" {
						t.Errorf("ConfigMap %s: secret key %s belongs in the Secret", cm.Name, path)
					}
				})
			}

			// Every pod: restricted; every BULKHEAD_ variable: the contract's.
			specs := podSpecs(r)
			for _, p := range specs {
				uid := int64(65532)
				if strings.HasPrefix(p.owner, "StatefulSet/") {
					uid = 999 // the postgres image's own user
				}
				assertRestricted(t, p, uid)
			}
			if unknown := c.unknownEnv(envNames(specs)); len(unknown) > 0 {
				t.Errorf("environment names not in CONTRACT.md: %v", unknown)
			}

			// The server: serve, probes, config mounted and named.
			d := serving(t, r)
			server := d.Spec.Template.Spec.Containers[0]
			if !slices.Equal(server.Args, []string{"serve"}) {
				t.Errorf("server args = %v, want [serve]", server.Args)
			}
			assertHTTPProbe(t, server, "liveness", server.LivenessProbe, "/healthz")
			assertHTTPProbe(t, server, "readiness", server.ReadinessProbe, "/readyz")
			assertConfigMounted(t, d.Spec.Template.Spec, server, fullname)
			if d.Spec.Template.Annotations["checksum/config"] == "" || d.Spec.Template.Annotations["checksum/secret"] == "" {
				t.Errorf("pod template annotations %v lack checksum/config and checksum/secret", d.Spec.Template.Annotations)
			}
			if sa := named[corev1.ServiceAccount](r, d.Spec.Template.Spec.ServiceAccountName); sa == nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %s missing or automounts its token", d.Spec.Template.Spec.ServiceAccountName)
			}
			svc := named[corev1.Service](r, fullname)
			if svc == nil || !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
				t.Errorf("Service %s does not select the server pods on port http", fullname)
			}
			if pdb := one[policyv1.PodDisruptionBudget](t, r); !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
				t.Errorf("PodDisruptionBudget selects %v, not the server pods", pdb.Spec.Selector.MatchLabels)
			}
			assertNetworkPolicy(t, r, d)

			// Autoscaling only where enabled, and then it owns the replica count.
			hpas := all[autoscalingv2.HorizontalPodAutoscaler](r)
			if got := len(hpas) == 1; got != tt.wantHPA || len(hpas) > 1 {
				t.Errorf("%d HorizontalPodAutoscalers, want HPA %v", len(hpas), tt.wantHPA)
			}
			if got := d.Spec.Replicas == nil; got != tt.wantHPA {
				t.Errorf("Deployment replicas set = %v with HPA %v", !got, tt.wantHPA)
			}
			for _, h := range hpas {
				if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
					t.Errorf("HPA scales %s/%s, not the server", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
				}
			}

			// Migrations: a hook Job with an external database, an init
			// container with the bundled one.
			jobs := all[batchv1.Job](r)
			if got := len(jobs) == 1; got != tt.wantJob || len(jobs) > 1 {
				t.Fatalf("%d migration Jobs, want Job %v", len(jobs), tt.wantJob)
			}
			for _, j := range jobs {
				assertMigrationHook(t, r, j, "")
			}
			init := d.Spec.Template.Spec.InitContainers
			if got := len(init) == 1 && slices.Equal(init[0].Args, []string{"migrate"}); got == tt.wantJob {
				t.Errorf("init containers %v: want a migrate init container %v", init, !tt.wantJob)
			}

			if got := len(all[appsv1.StatefulSet](r)) == 1; got != tt.wantPostgres {
				t.Errorf("bundled PostgreSQL %v, want %v", got, tt.wantPostgres)
			}
		})
	}
}

func assertHTTPProbe(t *testing.T, c corev1.Container, kind string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("container %s: no HTTP %s probe", c.Name, kind)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("http") {
		t.Errorf("container %s: %s probe %s on port %s, want %s on http", c.Name, kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "http" && p.ContainerPort == 8080 }) {
		t.Errorf("container %s: no port http on 8080", c.Name)
	}
}

// assertConfigMounted checks that c reads the config file of ConfigMap cm
// through BULKHEAD_CONFIG.
func assertConfigMounted(t *testing.T, s corev1.PodSpec, c corev1.Container, cm string) {
	t.Helper()
	var path string
	for _, e := range c.Env {
		if e.Name == "BULKHEAD_CONFIG" {
			path = e.Value
		}
	}
	for _, m := range c.VolumeMounts {
		for _, v := range s.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm && path == m.MountPath+"/config.yaml" {
				return
			}
		}
	}
	t.Errorf("container %s: BULKHEAD_CONFIG %q is not config.yaml of ConfigMap %s", c.Name, path, cm)
}

// assertNetworkPolicy checks that the server pods may be reached only on the
// HTTP port and may reach only DNS and PostgreSQL.
func assertNetworkPolicy(t *testing.T, r *rendered, d *appsv1.Deployment) {
	t.Helper()
	np := named[networkingv1.NetworkPolicy](r, d.Name)
	if np == nil {
		t.Fatalf("no NetworkPolicy %s", d.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy %s does not select the server pods", np.Name)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("NetworkPolicy policyTypes %v", np.Spec.PolicyTypes)
	}
	for _, in := range np.Spec.Ingress {
		for _, p := range in.Ports {
			if p.Port == nil || *p.Port != intstr.FromString("http") {
				t.Errorf("NetworkPolicy admits port %v, not only http", p.Port)
			}
		}
	}
	var egress []string
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			egress = append(egress, fmt.Sprintf("%s/%s", *p.Protocol, p.Port.String()))
		}
	}
	if want := []string{"UDP/53", "TCP/53", "TCP/5432"}; !slices.Equal(egress, want) {
		t.Errorf("NetworkPolicy egress ports %v, want %v", egress, want)
	}
}

// assertMigrationHook checks the Job's hook annotations, and that everything
// it needs exists when a pre-install hook runs: either a hook of a lower
// weight of the same release, or the user's existingSecret.
func assertMigrationHook(t *testing.T, r *rendered, j *batchv1.Job, existingSecret string) {
	t.Helper()
	a := j.Annotations
	if a[hookAnnotation] != "pre-install,pre-upgrade" {
		t.Errorf("Job %s: %s = %q, want pre-install,pre-upgrade", j.Name, hookAnnotation, a[hookAnnotation])
	}
	if a[hookDeleteAnnotation] != "before-hook-creation,hook-succeeded" {
		t.Errorf("Job %s: %s = %q, want before-hook-creation,hook-succeeded", j.Name, hookDeleteAnnotation, a[hookDeleteAnnotation])
	}
	weight, err := strconv.Atoi(a[hookWeightAnnotation])
	if err != nil {
		t.Fatalf("Job %s: %s = %q: %v", j.Name, hookWeightAnnotation, a[hookWeightAnnotation], err)
	}
	spec := j.Spec.Template.Spec
	if len(spec.Containers) != 1 || !slices.Equal(spec.Containers[0].Args, []string{"migrate"}) {
		t.Errorf("Job %s does not run `bulkhead migrate`", j.Name)
	}
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("Job %s: restartPolicy %q", j.Name, spec.RestartPolicy)
	}

	// What the Job's pod refers to by name.
	type ref struct{ kind, name string }
	refs := []ref{{"ServiceAccount", spec.ServiceAccountName}}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			refs = append(refs, ref{"ConfigMap", v.ConfigMap.Name})
		}
		if v.Secret != nil {
			refs = append(refs, ref{"Secret", v.Secret.SecretName})
		}
	}
	for _, c := range containers(spec) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				refs = append(refs, ref{"Secret", e.ValueFrom.SecretKeyRef.Name})
			}
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				refs = append(refs, ref{"ConfigMap", e.ValueFrom.ConfigMapKeyRef.Name})
			}
		}
	}
	for _, rf := range refs {
		if rf.kind == "Secret" && rf.name == existingSecret {
			continue // the user's, there before the release
		}
		var obj metav1.Object
		for _, o := range r.objects {
			if o.GetName() == rf.name && reflect.TypeOf(o).Elem().Name() == rf.kind {
				obj = o
			}
		}
		if obj == nil {
			t.Errorf("Job %s needs %s %s, which the chart does not render", j.Name, rf.kind, rf.name)
			continue
		}
		oa := obj.GetAnnotations()
		w, err := strconv.Atoi(oa[hookWeightAnnotation])
		if oa[hookAnnotation] != a[hookAnnotation] || err != nil || w >= weight {
			t.Errorf("Job %s (weight %d) needs %s %s, which is not a %s hook of lower weight (annotations %v): it would not exist yet",
				j.Name, weight, rf.kind, rf.name, a[hookAnnotation], oa)
		}
		if oa[hookDeleteAnnotation] != "before-hook-creation,hook-succeeded" {
			t.Errorf("%s %s: %s = %q, want before-hook-creation,hook-succeeded", rf.kind, rf.name, hookDeleteAnnotation, oa[hookDeleteAnnotation])
		}
	}
}

func TestExistingSecret(t *testing.T) {
	t.Parallel()
	r := mustRender(t, []string{profileFile("saas")}, values("existingSecret", "bulkhead-db"))
	if secrets := all[corev1.Secret](r); len(secrets) > 0 {
		t.Errorf("the chart renders %d Secrets beside existingSecret", len(secrets))
	}
	for _, p := range podSpecs(r) {
		for _, c := range containers(p.spec) {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "bulkhead-db" {
					t.Errorf("%s container %s: %s reads Secret %s, not existingSecret", p.owner, c.Name, e.Name, e.ValueFrom.SecretKeyRef.Name)
				}
			}
		}
	}
	assertMigrationHook(t, r, one[batchv1.Job](t, r), "bulkhead-db")
}

func TestSecretHoldsCredentials(t *testing.T) {
	t.Parallel()
	const (
		dsn     = "postgres://bulkhead_app:pw@db:5432/bulkhead"
		migrate = "postgres://bulkhead_owner:pw@db:5432/bulkhead"
		token   = "0123456789abcdef0123456789abcdef"
	)
	r := mustRender(t, []string{profileFile("regulated")}, values(
		"secrets.databaseUrl", dsn, "secrets.migrateDatabaseUrl", migrate, "secrets.adminToken", token))
	s := named[corev1.Secret](r, releaseName)
	if s == nil {
		t.Fatal("no Secret")
	}
	want := map[string]string{"BULKHEAD_DATABASE_URL": dsn, "BULKHEAD_MIGRATE_DATABASE_URL": migrate, "BULKHEAD_ADMIN_TOKEN": token}
	if got := stringData(s); !maps.Equal(got, want) {
		t.Errorf("Secret data = %v, want %v", got, want)
	}
	// The migration's copy carries only what `bulkhead migrate` reads.
	hook := named[corev1.Secret](r, releaseName+"-migrate")
	if hook == nil {
		t.Fatal("no hook Secret for the migration Job")
	}
	delete(want, "BULKHEAD_ADMIN_TOKEN")
	if got := stringData(hook); !maps.Equal(got, want) {
		t.Errorf("hook Secret data = %v, want %v", got, want)
	}
	for _, cm := range all[corev1.ConfigMap](r) {
		for k, v := range cm.Data {
			if strings.Contains(v, "pw@") || strings.Contains(v, token) {
				t.Errorf("ConfigMap %s key %s holds a credential", cm.Name, k)
			}
		}
	}
}

func stringData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out
}

func TestBundledPostgreSQL(t *testing.T) {
	t.Parallel()
	r := mustRender(t, []string{profileFile("community")})
	pgName := releaseName + "-postgresql"

	sts := one[appsv1.StatefulSet](t, r)
	c := sts.Spec.Template.Spec.Containers[0]
	if c.Image != "postgres:15" {
		t.Errorf("PostgreSQL image %s, want postgres:15", c.Image)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().IsZero() {
		t.Errorf("StatefulSet %s has no sized volumeClaimTemplate", sts.Name)
	}
	svc := named[corev1.Service](r, sts.Spec.ServiceName)
	if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !reflect.DeepEqual(svc.Spec.Selector, sts.Spec.Selector.MatchLabels) {
		t.Errorf("StatefulSet %s has no headless Service selecting it", sts.Name)
	}

	pg := named[corev1.Secret](r, pgName)
	if pg == nil {
		t.Fatalf("no Secret %s", pgName)
	}
	if pg.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("Secret %s is not kept on uninstall, but its volume is", pgName)
	}
	super, app := string(pg.Data["postgres-password"]), string(pg.Data["app-password"])
	if len(super) < 32 || len(app) < 32 || super == app {
		t.Errorf("generated passwords %q and %q: want two different ones of 32 characters", super, app)
	}

	// The server's DSNs point at it, with the same passwords.
	server := stringData(named[corev1.Secret](r, releaseName))
	host := pgName + "." + namespace + ".svc:5432"
	assertDSN(t, server["BULKHEAD_DATABASE_URL"], "bulkhead_app", app, host)
	assertDSN(t, server["BULKHEAD_MIGRATE_DATABASE_URL"], "postgres", super, host)

	// Only the server pods reach it.
	np := named[networkingv1.NetworkPolicy](r, pgName)
	if np == nil || len(np.Spec.Ingress) != 1 || len(np.Spec.Egress) != 0 {
		t.Fatalf("NetworkPolicy %s: want one ingress rule and no egress", pgName)
	}
	sel, err := metav1.LabelSelectorAsSelector(np.Spec.Ingress[0].From[0].PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if d := serving(t, r); !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy %s does not admit the server pods", pgName)
	}
}

func assertDSN(t *testing.T, dsn, user, password, host string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DSN %q: %v", dsn, err)
	}
	pw, _ := u.User.Password()
	if u.Scheme != "postgres" || u.User.Username() != user || pw != password || u.Host != host {
		t.Errorf("DSN %q: want user %s, the generated password, host %s", dsn, user, host)
	}
}

func TestChecksumsRollPods(t *testing.T) {
	t.Parallel()
	checksums := func(overrides ...map[string]any) (config, secret string) {
		t.Helper()
		a := serving(t, mustRender(t, []string{profileFile("saas")}, overrides...)).Spec.Template.Annotations
		return a["checksum/config"], a["checksum/secret"]
	}
	baseConfig, baseSecret := checksums()
	againConfig, againSecret := checksums()
	if againConfig != baseConfig || againSecret != baseSecret {
		t.Errorf("the same values give different checksums")
	}
	poolerConfig, poolerSecret := checksums(values("config.database.pooler", "none"))
	if poolerConfig == baseConfig {
		t.Errorf("checksum/config unchanged after config.database.pooler changed")
	}
	if poolerSecret != baseSecret {
		t.Errorf("checksum/secret changed though only the config did")
	}
	dsnConfig, dsnSecret := checksums(values("secrets.databaseUrl", "postgres://bulkhead_app@db/bulkhead"))
	if dsnSecret == baseSecret {
		t.Errorf("checksum/secret unchanged after secrets.databaseUrl changed")
	}
	if dsnConfig != baseConfig {
		t.Errorf("checksum/config changed though only the Secret did")
	}
}

func TestEnterpriseIsSingleTenantOnDatabases(t *testing.T) {
	t.Parallel()
	r := mustRender(t, []string{profileFile("enterprise")})
	d := serving(t, r)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("enterprise replicas = %v, want 1", d.Spec.Replicas)
	}
	cfg := configFile(t, named[corev1.ConfigMap](r, releaseName))
	if got := lookupPath(cfg, "isolation.database.max_connections"); got != float64(50) {
		t.Errorf("isolation.database.max_connections = %v, want 50", got)
	}
}

// TestEveryOption renders a values file that sets every optional knob, so
// that each template branch is decoded strictly too.
func TestEveryOption(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	r := mustRender(t, []string{profileFile("enterprise"), "testdata/values-everything.yaml"})
	for _, p := range podSpecs(r) {
		assertRestricted(t, p, 65532)
	}
	if unknown := c.unknownEnv(envNames(podSpecs(r))); len(unknown) > 0 {
		t.Errorf("environment names not in CONTRACT.md: %v", unknown)
	}
	cfg := configFile(t, named[corev1.ConfigMap](r, "bulkhead-everything"))
	servers, _ := lookupPath(cfg, "isolation.database.servers").([]any)
	if len(servers) != 2 {
		t.Errorf("isolation.database.servers = %v, want the two of the values file", servers)
	}
	walkKeys("", cfg, func(path string, _ bool) {
		if !c.keys[path] {
			t.Errorf("config key %s is not in the contract", path)
		}
	})
	d := serving(t, r)
	if want := "bulkheadhq/bulkhead@sha256:" + strings.Repeat("ab", 32); d.Spec.Template.Spec.Containers[0].Image != want {
		t.Errorf("image %s, want %s", d.Spec.Template.Spec.Containers[0].Image, want)
	}
	if tsc := d.Spec.Template.Spec.TopologySpreadConstraints; len(tsc) != 2 || tsc[0].LabelSelector == nil || tsc[1].LabelSelector == nil {
		t.Errorf("topologySpreadConstraints %+v: want both with a labelSelector", tsc)
	}
	if len(all[corev1.Secret](r)) != 0 {
		t.Errorf("Secrets rendered beside existingSecret")
	}
	assertMigrationHook(t, r, one[batchv1.Job](t, r), "bulkhead-db")
}

func TestSchemaRejects(t *testing.T) {
	t.Parallel()
	typo, err := chartutil.ReadValuesFile("testdata/values-typo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"typo at the top (testdata/values-typo.yaml)", typo.AsMap(), "'replicaCont' not allowed"},
		{"typo in config", values("config.isolation.strategyy", "rls"), "'strategyy' not allowed"},
		{"a key the chart sets itself", values("config.http.addr", "0.0.0.0:9090"), "'addr' not allowed"},
		{"a limit of the wrong shape", values("config.limits.concurrency.queue_timeout", "soon"), "queue_timeout"},
		{"DSN in the config file", values("config.database.url", "postgres://x@y/z"), "'url' not allowed"},
		{"typo in postgresql", values("postgresql.persistance.size", "1Gi"), "'persistance' not allowed"},
		{"typo in a list item", values("tolerations", []any{map[string]any{"key": "a", "efect": "NoSchedule"}}), "'efect' not allowed"},
		{"unknown profile", values("config.profile", "sass"), "profile"},
		{"unknown strategy", values("config.isolation.strategy", "tables"), "strategy"},
		{"short admin token", values("secrets.adminToken", "short"), "adminToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, []string{profileFile("saas")}, tt.values)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render error = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// TestSchemaIsClosed walks values.schema.json: every object schema says
// what it allows beyond its properties (false, or a schema for map values);
// `true` is left to a short list of Kubernetes types passed through, and
// every $ref is local.
func TestSchemaIsClosed(t *testing.T) {
	t.Parallel()
	passThrough := map[string]bool{
		"/properties/global":          true, // an umbrella chart's shared values
		"/definitions/k8sPassthrough": true, // affinity terms, validated by the API server
	}
	raw, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	if schema["$schema"] != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema = %v, want draft-07", schema["$schema"])
	}
	objects := 0
	var walk func(ptr string, v any)
	walk = func(ptr string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok && !strings.HasPrefix(ref, "#/") {
				t.Errorf("%s: remote $ref %s", ptr, ref)
			}
			if v["type"] == "object" {
				objects++
				switch ap := v["additionalProperties"].(type) {
				case bool:
					if ap && !passThrough[ptr] {
						t.Errorf("%s: additionalProperties true", ptr)
					}
				case map[string]any:
					if _, hasProps := v["properties"]; hasProps {
						t.Errorf("%s: a map schema with properties", ptr)
					}
				default:
					t.Errorf("%s: object without additionalProperties", ptr)
				}
			}
			for k, sub := range v {
				walk(ptr+"/"+k, sub)
			}
		case []any:
			for i, sub := range v {
				walk(fmt.Sprintf("%s/%d", ptr, i), sub)
			}
		}
	}
	walk("", schema)
	if objects < 20 {
		t.Errorf("found only %d object schemas", objects)
	}
}

func TestNotes(t *testing.T) {
	t.Parallel()
	r := mustRender(t, []string{profileFile("saas")})
	if !strings.Contains(r.notes, "WARNING: no database configured") {
		t.Errorf("NOTES do not warn that no database is configured:\n%s", r.notes)
	}
	r = mustRender(t, []string{profileFile("saas")}, values("existingSecret", "bulkhead-db"))
	if strings.Contains(r.notes, "WARNING") || !strings.Contains(r.notes, "port-forward service/"+releaseName) {
		t.Errorf("NOTES with existingSecret:\n%s", r.notes)
	}
}

// secretKeysRead returns the Secret keys a pod template's containers read
// (init containers included), by environment or mounted file.
func secretKeysRead(spec corev1.PodSpec, initContainers bool) []string {
	var out []string
	cs := spec.Containers
	if initContainers {
		cs = append(slices.Clone(spec.InitContainers), cs...)
	}
	mounted := map[string]bool{}
	for _, c := range cs {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				out = append(out, e.ValueFrom.SecretKeyRef.Key)
			}
		}
		for _, m := range c.VolumeMounts {
			mounted[m.Name] = true
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil && mounted[v.Name] {
			for _, it := range v.Secret.Items {
				out = append(out, it.Key)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// The owner DSN (its role bypasses Row-Level Security) and the admin token
// reach only the admin pod and the migration; the serving container reads
// the serving DSN alone, whether secrets are variables or files.
func TestOwnerDSNOnlyWhereProvisioning(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"saas", "regulated", "enterprise", "community"} {
		for _, files := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/files=%v", p, files), func(t *testing.T) {
				t.Parallel()
				r := mustRender(t, []string{profileFile(p)}, values("existingSecret", "bulkhead-db", "secretFiles.enabled", files))
				d := serving(t, r)
				if got := secretKeysRead(corev1.PodSpec{Containers: d.Spec.Template.Spec.Containers, Volumes: d.Spec.Template.Spec.Volumes}, false); !slices.Equal(got, []string{"BULKHEAD_DATABASE_URL"}) {
					t.Errorf("serving container reads %v, want only BULKHEAD_DATABASE_URL", got)
				}
				if p != "community" && len(d.Spec.Template.Spec.InitContainers) > 0 {
					t.Errorf("serving pods of %s have init containers %v", p, d.Spec.Template.Spec.InitContainers)
				}
				a := component(r, "admin")
				if a == nil {
					t.Fatal("no admin Deployment")
				}
				want := []string{"BULKHEAD_ADMIN_TOKEN", "BULKHEAD_DATABASE_URL", "BULKHEAD_MIGRATE_DATABASE_URL"}
				if got := secretKeysRead(a.Spec.Template.Spec, true); !slices.Equal(got, want) {
					t.Errorf("admin pod reads %v, want %v", got, want)
				}
				if a.Spec.Replicas == nil || *a.Spec.Replicas != 1 || a.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
					t.Errorf("admin Deployment: replicas %v, strategy %s; want 1, Recreate", a.Spec.Replicas, a.Spec.Strategy.Type)
				}
				for _, j := range all[batchv1.Job](r) {
					if got := secretKeysRead(j.Spec.Template.Spec, true); slices.Contains(got, "BULKHEAD_ADMIN_TOKEN") || !slices.Contains(got, "BULKHEAD_MIGRATE_DATABASE_URL") {
						t.Errorf("migration Job reads %v", got)
					}
				}
				// Nothing routes to the admin pod from outside.
				for _, svc := range all[corev1.Service](r) {
					if svc.Spec.Selector["app.kubernetes.io/component"] == "admin" && svc.Spec.Type != corev1.ServiceTypeClusterIP {
						t.Errorf("admin Service %s is %s", svc.Name, svc.Spec.Type)
					}
				}
			})
		}
	}
	r := mustRender(t, []string{profileFile("saas")}, values("existingSecret", "bulkhead-db", "admin.enabled", false))
	if a := component(r, "admin"); a != nil {
		t.Errorf("admin.enabled false still renders %s", a.Name)
	}
	for _, d := range all[appsv1.Deployment](r) {
		if got := secretKeysRead(d.Spec.Template.Spec, true); slices.Contains(got, "BULKHEAD_MIGRATE_DATABASE_URL") {
			t.Errorf("Deployment %s reads the owner DSN with admin.enabled false", d.Name)
		}
	}
}

// With secretFiles the pods get BULKHEAD_*_FILE naming files of a volume
// holding exactly those keys, readable by the user only, and no secret in
// the environment.
func TestSecretFiles(t *testing.T) {
	t.Parallel()
	r := mustRender(t, []string{profileFile("saas")}, values("existingSecret", "bulkhead-db", "secretFiles.enabled", true))
	for _, p := range podSpecs(r) {
		for _, c := range containers(p.spec) {
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					t.Errorf("%s %s: %s from %v", p.owner, c.Name, e.Name, e.ValueFrom)
				}
				if key, ok := strings.CutSuffix(e.Name, "_FILE"); ok && e.Value != "/var/run/secrets/bulkhead/"+key {
					t.Errorf("%s %s: %s = %q", p.owner, c.Name, e.Name, e.Value)
				}
			}
		}
		for _, v := range p.spec.Volumes {
			if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400 || v.Secret.SecretName != "bulkhead-db") {
				t.Errorf("%s volume %s: %+v", p.owner, v.Name, v.Secret)
			}
		}
	}
	if _, err := render(t, []string{profileFile("saas")}, values("secretFiles.enabled", true, "secrets.databaseUrl", "postgres://a@db/x")); err == nil || !strings.Contains(err.Error(), "secrets.adminToken") {
		t.Errorf("secretFiles without an admin token for the admin pod: %v, want a failure naming secrets.adminToken", err)
	}
}

// poolOf is database.max_connections of the rendered config file.
func poolOf(t *testing.T, r *rendered) int {
	t.Helper()
	for _, cm := range all[corev1.ConfigMap](r) {
		if cm.Labels["app.kubernetes.io/component"] == "" {
			n, _ := lookupPath(configFile(t, cm), "database.max_connections").(float64)
			return int(n)
		}
	}
	t.Fatal("no ConfigMap")
	return 0
}

// Every pod that can run at once, with its pool, fits database.maxConnections
// less the reserve; a pool that would not fit fails the render naming the
// keys; 0 derives the largest that fits.
func TestConnectionBudget(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "saas", "regulated", "enterprise", "community"} {
		r := mustRender(t, []string{profileFile(p)})
		pool := poolOf(t, r)
		d := serving(t, r)
		replicas := 0
		if d.Spec.Replicas != nil {
			replicas = int(*d.Spec.Replicas)
		}
		for _, h := range all[autoscalingv2.HorizontalPodAutoscaler](r) {
			replicas = int(h.Spec.MaxReplicas)
		}
		pods := replicas + (replicas+3)/4 + len(all[appsv1.Deployment](r)) - 1
		vals, err := chartutil.ReadValuesFile(chartDir + "/values.yaml")
		if err != nil {
			t.Fatal(err)
		}
		limit := 100
		if p != "" {
			pv, err := chartutil.ReadValuesFile(profileFile(p))
			if err != nil {
				t.Fatal(err)
			}
			merge(vals, pv.AsMap())
		}
		if db, ok := vals["database"].(map[string]any); ok {
			limit = int(db["maxConnections"].(float64)) - int(db["reservedConnections"].(float64))
		}
		tenant := 0
		if p == "enterprise" {
			tenant = 50
		}
		if need := pods*(pool+tenant) + 4; pool < 2 || need > limit {
			t.Errorf("profile %q: %d pods x (%d + %d) + 4 = %d connections, limit %d", p, pods, pool, tenant, need, limit)
		}
	}
	if got := poolOf(t, mustRender(t, []string{profileFile("saas")})); got != (1000-10-4)/(25+1) {
		t.Errorf("saas derived pool %d, want %d", got, (1000-10-4)/(25+1))
	}
	for _, o := range []map[string]any{
		values("database.maxConnections", 100, "config.database.pooler", "none", "config.database.max_connections", 40),
		values("database.maxConnections", 50),
	} {
		if _, err := render(t, []string{profileFile("saas")}, o); err == nil || !strings.Contains(err.Error(), "database.maxConnections") {
			t.Errorf("saas with %v: %v, want a failure naming database.maxConnections", o, err)
		}
	}
}

// The optional Ingress, HTTPRoute and ServiceMonitor point at the serving
// Service, never the admin one, and each refuses to render half-configured.
func TestIngressRouteAndMonitor(t *testing.T) {
	t.Parallel()
	r := mustRender(t, []string{profileFile("saas")})
	if n := len(all[networkingv1.Ingress](r)) + len(all[unstructured.Unstructured](r)); n != 0 {
		t.Errorf("%d Ingress/HTTPRoute/ServiceMonitor objects by default", n)
	}
	r = mustRender(t, []string{profileFile("saas"), "testdata/values-everything.yaml"})
	const svc = "bulkhead-everything"
	ing := one[networkingv1.Ingress](t, r)
	if len(ing.Spec.Rules) != 2 || *ing.Spec.IngressClassName != "nginx" || len(ing.Spec.TLS) != 1 {
		t.Errorf("Ingress spec %+v", ing.Spec)
	}
	for _, rule := range ing.Spec.Rules {
		if b := rule.HTTP.Paths[0].Backend.Service; b.Name != svc || b.Port.Name != "http" {
			t.Errorf("Ingress rule %s routes to %s:%s", rule.Host, b.Name, b.Port.Name)
		}
	}
	server := named[corev1.Service](r, svc)
	for _, u := range all[unstructured.Unstructured](r) {
		switch u.GetKind() {
		case "HTTPRoute":
			refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
			backend := refs[0].(map[string]any)["backendRefs"].([]any)[0].(map[string]any)
			if backend["name"] != svc || backend["port"] != int64(server.Spec.Ports[0].Port) {
				t.Errorf("HTTPRoute backend %v, want %s:%d", backend, svc, server.Spec.Ports[0].Port)
			}
			parents, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
			if len(parents) != 1 || parents[0].(map[string]any)["name"] != "public" {
				t.Errorf("HTTPRoute parentRefs %v", parents)
			}
		case "ServiceMonitor":
			sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
			if !labels.SelectorFromSet(sel).Matches(labels.Set(server.Labels)) || sel["app.kubernetes.io/component"] != "server" {
				t.Errorf("ServiceMonitor selects %v, not the serving Service %v", sel, server.Labels)
			}
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
			if ep := eps[0].(map[string]any); ep["port"] != "http" || ep["path"] != "/metrics" || ep["interval"] != "1m" {
				t.Errorf("ServiceMonitor endpoint %v", ep)
			}
			if u.GetLabels()["release"] != "prometheus" {
				t.Errorf("ServiceMonitor labels %v lack metrics.serviceMonitor.labels", u.GetLabels())
			}
		default:
			t.Errorf("unexpected %s", u.GetKind())
		}
	}
	if n := len(all[unstructured.Unstructured](r)); n != 2 {
		t.Errorf("%d custom resources, want an HTTPRoute and a ServiceMonitor", n)
	}
	for key, o := range map[string]map[string]any{
		"ingress.hosts":        values("ingress.enabled", true),
		"httpRoute.parentRefs": values("httpRoute.enabled", true),
	} {
		if _, err := render(t, []string{profileFile("saas")}, o); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%v: %v, want a failure naming %s", o, err, key)
		}
	}
}

// NOTES lead from install to a first key through the admin pod, or say how
// without it.
func TestFirstKeyNotes(t *testing.T) {
	t.Parallel()
	r := mustRender(t, []string{profileFile("saas")}, values("existingSecret", "bulkhead-db"))
	for _, want := range []string{
		"kubectl --namespace bulkhead exec deploy/bulkhead-admin -- /bulkhead tenant create acme",
		"kubectl --namespace bulkhead exec deploy/bulkhead-admin -- /bulkhead key create --tenant acme --role editor",
		"port-forward service/bulkhead-admin",
	} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
	r = mustRender(t, []string{profileFile("saas")}, values("existingSecret", "bulkhead-db", "admin.enabled", false))
	if strings.Contains(r.notes, "bulkhead-admin") || !strings.Contains(r.notes, "bulkhead tenant create acme") {
		t.Errorf("NOTES with admin.enabled false:\n%s", r.notes)
	}
}
