// The peer of `stackc build --target kubernetes` in bench/targets: cdk8s
// (plain ApiObjects) generating one Deployment and one Service for each of
// N services, synthesized to YAML in memory.
const { App, Chart, ApiObject } = require('cdk8s');

const n = parseInt(process.argv[2] || '10000', 10);
const app = new App({ outdir: require('os').tmpdir() + '/cdk8s-bench-out' });
const chart = new Chart(app, 'generated');
for (let i = 0; i < n; i++) {
  const name = `svc-${i}`;
  const labels = { 'app.kubernetes.io/name': name, 'app.kubernetes.io/part-of': 'generated' };
  new ApiObject(chart, `${name}-deployment`, {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels },
    spec: {
      replicas: i % 10 === 0 ? 3 : 1,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          containers: [{
            name,
            image: `registry.example.com/team/${name}:1.${i % 7}.0`,
            ports: [{ containerPort: 8080 }, { containerPort: 9090, name: 'metrics' }],
            env: [{ name: 'SERVICE_NAME', value: name }, { name: 'LOG_LEVEL', value: 'info' }],
            resources: { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '250m', memory: '256Mi' } },
            readinessProbe: { httpGet: { path: '/health', port: 8080 }, periodSeconds: 10, timeoutSeconds: 3 },
          }],
        },
      },
    },
  });
  new ApiObject(chart, `${name}-service`, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, labels },
    spec: { selector: labels, ports: [{ name: 'http', port: 8080 }] },
  });
}
app.synth();
