/**
 * How a secret a ferry.yml refers to is named in the body of POST /api/v1/config/plan and
 * /apply: an environment variable by its name, a key file (`privateKeyFrom: { file: PATH }`)
 * by the ferry.yml it is named in and the path as written there — two files may name the
 * same relative path in different directories.
 */
export function keyFileSecret(fileName: string, path: string): string {
  return `file:${fileName}:${path}`;
}
