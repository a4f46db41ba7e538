// Turns a generated command form's inputs into parameters, checked against the command's JSON
// Schema subset the form supports (object of number / integer / boolean / string / enum, with
// required, minimum, maximum). The gateway validates again with the full schema.

import type { JsonSchema } from './api';

export function paramsFromForm(
  schema: JsonSchema,
  values: Record<string, string | boolean | number | undefined>,
): { params: Record<string, unknown>; error: string | null } {
  const params: Record<string, unknown> = {};
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    const raw = values[name];
    const empty = raw === undefined || raw === '';
    if (empty) {
      if (schema.required?.includes(name)) return { params, error: `${name} is required` };
      continue;
    }
    if (prop.type === 'number' || prop.type === 'integer') {
      const n = typeof raw === 'number' ? raw : Number(raw);
      if (!Number.isFinite(n)) return { params, error: `${name} must be a number` };
      if (prop.type === 'integer' && !Number.isInteger(n)) return { params, error: `${name} must be a whole number` };
      if (prop.minimum !== undefined && n < prop.minimum) return { params, error: `${name} must be at least ${prop.minimum}` };
      if (prop.maximum !== undefined && n > prop.maximum) return { params, error: `${name} must be at most ${prop.maximum}` };
      params[name] = n;
    } else if (prop.type === 'boolean') {
      params[name] = raw === true || raw === 'true';
    } else if (prop.enum) {
      const match = prop.enum.find((option) => String(option) === String(raw));
      if (match === undefined) return { params, error: `${name} must be one of ${prop.enum.join(', ')}` };
      params[name] = match;
    } else {
      params[name] = String(raw);
    }
  }
  return { params, error: null };
}
