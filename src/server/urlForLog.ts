/**
 * A request's URL as the server log shows it: the path, and the query's parameter names with
 * their values left out (`/api/v1/tasks?api_key=…&state=…`). A client may put a credential in
 * the query (a key sent as `?api_key=`, an OIDC authorization code, a presigned signature), and
 * the log is read by more people, and kept longer, than the credential should be; the names
 * are enough to read what was asked. A part without `=`, or whose name does not look like a
 * parameter name (a token sent as the whole query), shows as `…` too.
 */
export function urlForLog(url: string): string {
  const separator = url.indexOf("?");
  if (separator < 0) return url;
  const parts = url
    .slice(separator + 1)
    .split("&")
    .filter((part) => part !== "")
    .map((part) => {
      const equals = part.indexOf("=");
      const name = equals < 0 ? "" : part.slice(0, equals);
      return /^[A-Za-z0-9_.[\]%-]{1,64}$/.test(name) ? `${name}=…` : "…";
    });
  return `${url.slice(0, separator)}?${parts.join("&")}`;
}
