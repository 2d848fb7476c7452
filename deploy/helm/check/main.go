// Command check decodes rendered Kubernetes manifests (`helm template` output) strictly into the
// Kubernetes API's own Go types: a misspelt or misplaced field, a wrong type, or a kind/apiVersion
// the chart should not emit fails. `helm template` checks none of that, and no cluster or schema
// download is available where CI runs (nox -s deploy).
//
//	go run . rendered.yaml...
package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Kinds the chart renders. The PodMonitor is a prometheus-operator CRD: not in k8s.io/api, so only
// its apiVersion is checked here (tests/deploy checks its fields).
func newObject(meta typeMeta) (any, bool) {
	switch meta {
	case typeMeta{"apps/v1", "Deployment"}:
		return &appsv1.Deployment{}, true
	case typeMeta{"apps/v1", "StatefulSet"}:
		return &appsv1.StatefulSet{}, true
	case typeMeta{"v1", "ConfigMap"}:
		return &corev1.ConfigMap{}, true
	case typeMeta{"v1", "Service"}:
		return &corev1.Service{}, true
	case typeMeta{"v1", "ServiceAccount"}:
		return &corev1.ServiceAccount{}, true
	case typeMeta{"policy/v1", "PodDisruptionBudget"}:
		return &policyv1.PodDisruptionBudget{}, true
	case typeMeta{"autoscaling/v2", "HorizontalPodAutoscaler"}:
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case typeMeta{"monitoring.coreos.com/v1", "PodMonitor"}:
		return nil, true
	}
	return nil, false
}

var separator = regexp.MustCompile(`(?m)^---\s*$`)

func checkFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	checked := 0
	for i, doc := range separator.Split(string(data), -1) {
		if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
			continue
		}
		var meta typeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return checked, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		obj, known := newObject(meta)
		if !known {
			return checked, fmt.Errorf("%s: document %d: unexpected %s %s", path, i, meta.APIVersion, meta.Kind)
		}
		if obj != nil {
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				return checked, fmt.Errorf("%s: %s: %w", path, meta.Kind, err)
			}
		}
		checked++
	}
	if checked == 0 {
		return 0, fmt.Errorf("%s: no manifests", path)
	}
	return checked, nil
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: check RENDERED.yaml...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		n, err := checkFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "manifest check:", err)
			os.Exit(1)
		}
		fmt.Printf("%s: %d manifests decode strictly\n", path, n)
	}
}
