package check

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// root is the repository root, from this package's directory.
const root = "../.."

func read(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	serveFlagsOnce sync.Once
	serveFlags     map[string]bool
	serveFlagsErr  error
)

// ebbServeFlags builds ebb from this tree and returns the flags its
// `serve --help` lists.
func ebbServeFlags(t *testing.T) map[string]bool {
	t.Helper()
	serveFlagsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ebb-check")
		if err != nil {
			serveFlagsErr = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "ebb")
		build := exec.Command("go", "build", "-o", bin, "./cmd/ebb")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			serveFlagsErr = fmt.Errorf("build ebb: %v\n%s", err, out)
			return
		}
		out, _ := exec.Command(bin, "serve", "--help").CombinedOutput() // help may exit non-zero
		serveFlags = map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^\s+--?([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
			serveFlags[m[1]] = true
		}
		if len(serveFlags) < 5 {
			serveFlagsErr = fmt.Errorf("ebb serve --help lists %d flags:\n%s", len(serveFlags), out)
		}
	})
	if serveFlagsErr != nil {
		t.Fatal(serveFlagsErr)
	}
	return serveFlags
}

// checkServeArgs checks that args (after "serve") use only flags ebb serve
// has.
func checkServeArgs(t *testing.T, where string, args []string) {
	t.Helper()
	i := slices.Index(args, "serve")
	if i < 0 {
		t.Errorf("%s: no serve command in %q", where, args)
		return
	}
	flags := ebbServeFlags(t)
	for _, a := range args[i+1:] {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !flags[name] {
			t.Errorf("%s: ebb serve has no flag --%s (it has %v)", where, name, keys(flags))
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// yamlDocs splits a multi-document YAML file.
func yamlDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// TestKubernetesManifests decodes every object of deploy/k8s strictly (an
// unknown or misplaced field fails) into its Kubernetes API type and checks
// what ebb needs: a non-root, locked-down container with probes on ebb's
// health routes, resources, a volume for its data directory, services that
// select its pods, serve flags that exist, and a kustomization that names
// existing files.
func TestKubernetesManifests(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(root, "deploy/k8s/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var (
		sets     []*appsv1.StatefulSet
		services []*corev1.Service
		kinds    = map[string]int{}
	)
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || base == "nats-values.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range yamlDocs(b) {
			where := fmt.Sprintf("%s document %d", base, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj any
			switch tm.APIVersion + "/" + tm.Kind {
			case "v1/Namespace":
				obj = &corev1.Namespace{}
			case "v1/ServiceAccount":
				obj = &corev1.ServiceAccount{}
			case "v1/Service":
				s := &corev1.Service{}
				services, obj = append(services, s), s
			case "apps/v1/StatefulSet":
				s := &appsv1.StatefulSet{}
				sets, obj = append(sets, s), s
			case "policy/v1/PodDisruptionBudget":
				obj = &policyv1.PodDisruptionBudget{}
			default:
				t.Fatalf("%s: kind %s/%s is not one this test knows; add it", where, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s (%s): %v", where, tm.Kind, err)
			}
			if m, ok := obj.(interface{ GetName() string }); ok && m.GetName() == "" {
				t.Errorf("%s: no metadata.name", where)
			}
			kinds[tm.Kind]++
		}
	}
	if len(sets) != 1 || len(services) == 0 {
		t.Fatalf("want one StatefulSet and a Service, have %v", kinds)
	}
	ss := sets[0]
	pod := ss.Spec.Template.Spec
	if ss.Spec.Selector == nil || !subset(ss.Spec.Selector.MatchLabels, ss.Spec.Template.Labels) {
		t.Errorf("StatefulSet selector %v does not select its template labels %v", ss.Spec.Selector, ss.Spec.Template.Labels)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want runAsNonRoot and a non-zero runAsUser", pod.SecurityContext)
	}
	var c *corev1.Container
	for i := range pod.Containers {
		if pod.Containers[i].Name == "ebb" {
			c = &pod.Containers[i]
		}
	}
	if c == nil {
		t.Fatal("no container named ebb")
	}
	if c.Image == "" || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("ebb container: image %q, resources %+v: want an image and memory requests and limits", c.Image, c.Resources)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want {
			t.Errorf("%s probe %+v: want httpGet %s", name, p, want)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("ebb container security context %+v: want no privilege escalation and all capabilities dropped", sc)
	}
	checkServeArgs(t, "k8s StatefulSet ebb", append(slices.Clone(c.Command), c.Args...))
	data := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--data="); ok {
			data = v
		}
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == data {
			mounted = slices.ContainsFunc(ss.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name })
		}
	}
	if data == "" || !mounted {
		t.Errorf("--data=%q is not on a volume claim of the StatefulSet", data)
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}
	for _, s := range services {
		if !subset(s.Spec.Selector, ss.Spec.Template.Labels) {
			t.Errorf("Service %s selects %v, not the ebb pods (%v)", s.Name, s.Spec.Selector, ss.Spec.Template.Labels)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.StrVal != "" && !ports[p.TargetPort.StrVal] {
				t.Errorf("Service %s targets port %q, which the container does not name", s.Name, p.TargetPort.StrVal)
			}
		}
	}
	if ss.Spec.ServiceName == "" || !slices.ContainsFunc(services, func(s *corev1.Service) bool {
		return s.Name == ss.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone
	}) {
		t.Errorf("StatefulSet serviceName %q is not a headless Service here", ss.Spec.ServiceName)
	}

	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Namespace  string   `json:"namespace"`
		Resources  []string `json:"resources"`
		Images     []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	if err := yaml.UnmarshalStrict(read(t, "deploy/k8s/kustomization.yaml"), &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	for _, r := range kust.Resources {
		if _, err := os.Stat(filepath.Join(root, "deploy/k8s", r)); err != nil {
			t.Errorf("kustomization.yaml: resource %s: %v", r, err)
		}
	}
	if len(kust.Images) != 1 || kust.Images[0].Name != strings.Split(c.Image, ":")[0] {
		t.Errorf("kustomization images %+v do not rewrite the container image %q", kust.Images, c.Image)
	}
	var values map[string]any
	if err := yaml.Unmarshal(read(t, "deploy/k8s/nats-values.yaml"), &values); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
	if got := fmt.Sprint(dig(values, "config", "cluster", "replicas"), dig(values, "config", "jetstream", "enabled")); got != "3 true" {
		t.Errorf("nats-values.yaml: cluster replicas and jetstream enabled are %q, want \"3 true\"", got)
	}
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func dig(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

// composeFile is the part of the compose file the test reads, strictly.
type composeFile struct {
	XNats    map[string]any            `json:"x-nats"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]map[string]any `json:"volumes"`
}

type composeService struct {
	Image       string            `json:"image"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Volumes     []string          `json:"volumes"`
	Ports       []string          `json:"ports"`
	DependsOn   []string          `json:"depends_on"`
	Restart     string            `json:"restart"`
	Healthcheck map[string]any    `json:"healthcheck"`
}

// TestCompose checks deploy/compose/compose.yaml: the services the issue
// asks for, pinned images, dependencies and named volumes that exist,
// bind mounts of files that exist, ebb pointed at all three NATS nodes with
// flags ebb serve has, and the collector on deploy/otel's config.
func TestCompose(t *testing.T) {
	var cf composeFile
	if err := yaml.UnmarshalStrict(read(t, "deploy/compose/compose.yaml"), &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for _, want := range []string{"ebb", "nats-1", "nats-2", "nats-3", "postgres", "collector"} {
		if _, ok := cf.Services[want]; !ok {
			t.Errorf("compose.yaml: no service %s", want)
		}
	}
	for name, s := range cf.Services {
		if i := strings.LastIndex(s.Image, ":"); i < 0 || strings.HasSuffix(s.Image, ":latest") {
			t.Errorf("service %s: image %q is not pinned to a tag", name, s.Image)
		}
		for _, d := range s.DependsOn {
			if _, ok := cf.Services[d]; !ok {
				t.Errorf("service %s depends on %s, which is not a service", name, d)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(root, "deploy/compose", src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("service %s mounts volume %s, which is not declared", name, src)
			}
		}
	}
	ebb := cf.Services["ebb"]
	checkServeArgs(t, "compose service ebb", ebb.Command)
	var natsURLs string
	for _, a := range ebb.Command {
		if v, ok := strings.CutPrefix(a, "--nats="); ok {
			natsURLs = v
		}
	}
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		if !strings.Contains(natsURLs, "nats://"+n+":4222") {
			t.Errorf("ebb --nats=%q does not name %s", natsURLs, n)
		}
		if !slices.Contains(ebb.DependsOn, n) {
			t.Errorf("ebb does not depend on %s", n)
		}
	}
	if !slices.Contains(cf.Services["collector"].Volumes, "../otel/collector.yaml:/etc/otelcol/collector.yaml:ro") {
		t.Errorf("collector does not run deploy/otel/collector.yaml: %v", cf.Services["collector"].Volumes)
	}
}

// TestNATSClusterConfig loads deploy/compose/nats.conf with nats-server's
// own config loader, as each of the three nodes does, and checks the
// cluster: JetStream on, one cluster name, routes to all three nodes.
func TestNATSClusterConfig(t *testing.T) {
	for _, node := range []string{"nats-1", "nats-2", "nats-3"} {
		t.Setenv("NATS_NAME", node)
		opts, err := server.ProcessConfigFile(filepath.Join(root, "deploy/compose/nats.conf"))
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		if opts.ServerName != node || !opts.JetStream || opts.Cluster.Name != "ebb" || len(opts.Routes) != 3 {
			t.Errorf("%s: server_name %q, jetstream %v, cluster %q, %d routes", node, opts.ServerName, opts.JetStream,
				opts.Cluster.Name, len(opts.Routes))
		}
	}
}

// TestDockerfile checks deploy/docker/Dockerfile the way a linter would
// where none can be installed: multi-stage, every base image pinned and
// fully qualified, a static build, a numeric non-root USER in the final
// stage, no ADD, exec-form ENTRYPOINT and CMD, and CMD flags ebb serve has.
func TestDockerfile(t *testing.T) {
	b := read(t, "deploy/docker/Dockerfile")
	var froms []string
	var final []string // instructions of the last stage
	for _, line := range strings.Split(string(bytes.ReplaceAll(b, []byte("\\\n"), nil)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			image := strings.Fields(rest)[0]
			froms, final = append(froms, image), nil
			if strings.Count(strings.Split(image, "/")[0], ".") == 0 || !strings.Contains(image, ":") || strings.HasSuffix(image, ":latest") {
				t.Errorf("FROM %s: want a fully qualified image with a pinned tag", image)
			}
		case "ADD":
			t.Errorf("ADD %s: use COPY", rest)
		}
		final = append(final, line)
	}
	if len(froms) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(froms))
	}
	if !regexp.MustCompile(`(?m)^RUN CGO_ENABLED=0 .*go build `).Match(b) {
		t.Error("no RUN CGO_ENABLED=0 ... go build")
	}
	var user, cmd string
	for _, l := range final {
		switch {
		case strings.HasPrefix(l, "USER "):
			user = strings.TrimPrefix(l, "USER ")
		case strings.HasPrefix(l, "CMD "):
			cmd = strings.TrimPrefix(l, "CMD ")
		case strings.HasPrefix(l, "ENTRYPOINT ") && !strings.HasPrefix(l, "ENTRYPOINT ["):
			t.Errorf("%s: want exec form", l)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(uid) {
		t.Errorf("final stage USER %q: want a numeric non-root uid", user)
	}
	var args []string
	if err := yaml.Unmarshal([]byte(cmd), &args); err != nil || len(args) == 0 {
		t.Fatalf("CMD %s: want exec form: %v", cmd, err)
	}
	checkServeArgs(t, "Dockerfile CMD", args)
}

// TestSystemdUnitFlags checks the flags of the unit's ExecStart against
// ebb serve (systemd-analyze verify checks the rest, deploy/systemd/verify.sh).
func TestSystemdUnitFlags(t *testing.T) {
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindSubmatch(read(t, "deploy/systemd/ebb.service"))
	if m == nil {
		t.Fatal("no ExecStart")
	}
	var args []string
	for _, f := range strings.Fields(string(m[1])) {
		if !strings.HasPrefix(f, "$") {
			args = append(args, f)
		}
	}
	checkServeArgs(t, "systemd ExecStart", args)
}
