/**
 * The participant router's memory of what it answered, keyed by operation and gid. A retry that
 * arrives while the first call is still running waits for the same answer instead of doing the
 * work again; one that arrives later gets the kept answer. Bounded: the oldest go first, and after
 * a restart the database itself (pg_prepared_xacts, pg_xact_status) is what answers.
 */
export class RecentAnswers<T> {
  readonly #answers = new Map<string, Promise<T>>();
  readonly #limit: number;

  constructor(limit = 10_000) {
    this.#limit = limit;
  }

  /** `keep` says whether a settled answer is final; errors and non-final answers are forgotten. */
  answer(key: string, work: () => Promise<T>, keep: (answer: T) => boolean): Promise<T> {
    const known = this.#answers.get(key);
    if (known) return known;
    const promise = work();
    this.#answers.set(key, promise);
    promise.then(
      (a) => {
        if (!keep(a)) this.#forget(key, promise);
      },
      () => this.#forget(key, promise),
    );
    if (this.#answers.size > this.#limit) this.#answers.delete(this.#answers.keys().next().value!);
    return promise;
  }

  #forget(key: string, promise: Promise<T>): void {
    if (this.#answers.get(key) === promise) this.#answers.delete(key);
  }
}
