/** Ferry's version, shown by `ferry --version` and in the OpenAPI document. */
export const FERRY_VERSION = "0.1.0";
