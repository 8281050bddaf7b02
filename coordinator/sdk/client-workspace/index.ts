// `pg-2pc-client` by name inside this repository (a file: dependency of the root package.json):
// the same entry the published client package is built from.
export * from '../client-package.ts';
