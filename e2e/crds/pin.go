// Package crds keeps the Operator's API package in this module's graph, so that
// controller-gen loads it (and its Kubernetes dependencies) at the pinned versions.
package crds

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
