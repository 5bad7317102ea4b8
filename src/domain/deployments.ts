/**
 * Why a deployment was requested. "rollback" is what DORA figures need: a change followed
 * by a rollback failed (docs/dora.md).
 *  - deploy: a release deployed on request (API, CLI, ferry.yml)
 *  - promote: the release the previous phase runs, promoted
 *  - rollback: an earlier release redeployed by a rollback
 *  - auto: an auto-deploy phase took a new or just-promoted release on its own
 */
export const deploymentKinds = ["deploy", "promote", "rollback", "auto"] as const;
export type DeploymentKind = (typeof deploymentKinds)[number];
